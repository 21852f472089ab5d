import keras

from keras_compact._checks import ChecksCallInputs, bool_errors, positive_int_errors, raise_errors


@keras.saving.register_keras_serializable(package="keras_compact")
class QRNN(ChecksCallInputs, keras.layers.Layer):
    """A quasi-recurrent layer with fo-pooling (Bradbury et al. 2017), optionally bidirectional.

    A causal `Conv1D` of width `kernel_size` computes, for every position at
    once, a candidate `z = tanh(.)`, a forget gate `f = sigmoid(.)` and an output
    gate `o = sigmoid(.)`; the only recurrence is elementwise:
    `c_t = f_t * c_{t-1} + (1 - f_t) * z_t`, `h_t = o_t * c_t`. With
    `bidirectional=True` a second convolution and pooling run from the last
    position to the first, and the two `h` are concatenated. This is the
    encoder of pQRNN (Kaliamoorthi et al. 2021). The time loop is unrolled over
    the (fixed) sequence length, so the exported `.tflite` file holds only
    builtin operators (CONV_2D, LOGISTIC, TANH, MUL, ADD, ...).

    Masked positions (`mask` False, for example padding tokens) keep the state
    (`f = 1`) and output zeros.

    Args:
        units: size of `h` per direction (>= 1).
        kernel_size: width of the gate convolution (>= 1).
        bidirectional: also run from the end of the sequence to its start.

    Call arguments:
        inputs: float `[batch, time, features]` with a known `time`.
        mask: optional bool `[batch, time]`.

    Returns:
        `[batch, time, units]` (`2 * units` when bidirectional) in the layer's
        compute dtype (float16 under `dtype="mixed_float16"`, whose gate
        weights stay float32).

    Example:

    >>> layer = QRNN(8, bidirectional=True)
    >>> tuple(layer(np.zeros((2, 5, 3), "float32")).shape)
    (2, 5, 16)
    """

    expected_inputs = "a float tensor (batch, time, features)"

    def __init__(self, units, kernel_size=2, bidirectional=True, **kwargs):
        errors = positive_int_errors(units=units, kernel_size=kernel_size)
        errors += bool_errors(bidirectional=bidirectional)
        raise_errors(errors)
        super().__init__(**kwargs)
        self.units = int(units)
        self.kernel_size = int(kernel_size)
        self.bidirectional = bool(bidirectional)
        self.supports_masking = True
        directions = ("forward", "backward") if bidirectional else ("forward",)
        self._gates = [
            keras.layers.Conv1D(
                3 * self.units, self.kernel_size, padding="causal", name=f"{direction}_gates", dtype=self.dtype_policy
            )
            for direction in directions
        ]

    @property
    def gates(self):
        """The gate convolutions (`Conv1D`, `3 * units` filters): the forward one, then the backward one."""
        return tuple(self._gates)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None:
            raise ValueError(
                "QRNN expects inputs of shape (batch, time, features) with a known time (pad the sequences "
                f"to a fixed length). Received: input_shape={tuple(input_shape)}"
            )
        for gates in self._gates:
            gates.build(input_shape)

    def call(self, inputs, mask=None):
        ops = keras.ops
        keep = None if mask is None else ops.expand_dims(ops.cast(mask, self.compute_dtype), -1)
        outputs = [self._pool(self._gates[0](inputs), keep)]
        if self.bidirectional:
            flipped = None if keep is None else ops.flip(keep, axis=1)
            outputs.append(ops.flip(self._pool(self._gates[1](ops.flip(inputs, axis=1)), flipped), axis=1))
        return outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=-1)

    def _pool(self, gates, keep):
        """fo-pooling over time, unrolled: `[batch, time, 3 * units]` gates to `[batch, time, units]`."""
        ops = keras.ops
        z, f, o = ops.split(gates, 3, axis=-1)
        z, f, o = ops.tanh(z), ops.sigmoid(f), ops.sigmoid(o)
        if keep is not None:
            f = keep * f + (1.0 - keep)  # a masked position keeps the state
            o = keep * o
        # Everything but the recurrence runs on whole tensors: each unrolled step is one multiply-add.
        candidates = (1.0 - f) * z
        state = ops.zeros_like(z[:, 0])
        states = []
        for t in range(z.shape[1]):
            state = f[:, t] * state + candidates[:, t]
            states.append(state)
        return o * ops.stack(states, axis=1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:2]) + (self.units * (2 if self.bidirectional else 1),)

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, kernel_size=self.kernel_size, bidirectional=self.bidirectional)
        return config
