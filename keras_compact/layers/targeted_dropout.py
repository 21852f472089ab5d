import keras
import numpy as np
from keras import ops

from keras_compact import _backend
from keras_compact._checks import ChecksCallInputs, check_rate, check_seed, one_of, positive_int_errors, raise_errors
from keras_compact.ops import targeting

GRANULARITIES = (*targeting.GRANULARITIES, "channel")
TRANSPOSED_LAYERS = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
SEPARABLE_LAYERS = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
SUPPORTED_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    *TRANSPOSED_LAYERS,
    *SEPARABLE_LAYERS,
)


def kernel_of(layer):
    """The kernel variable Targeted Dropout and pruning act on: a separable
    convolution's pointwise kernel, every other supported layer's `kernel`."""
    return layer.pointwise_kernel if isinstance(layer, SEPARABLE_LAYERS) else layer.kernel


def kernel_columns(kernel, layer):
    """`kernel` (`layer`'s, or one of its shape) as `[fan_in, units]` columns."""
    return targeting.kernel_columns(
        kernel, isinstance(layer, keras.layers.DepthwiseConv2D), isinstance(layer, TRANSPOSED_LAYERS)
    )


def columns_to_kernel(columns, layer):
    """Inverse of `kernel_columns`: the columns in the shape of `layer`'s kernel."""
    return targeting.columns_to_kernel(columns, kernel_of(layer).shape, isinstance(layer, TRANSPOSED_LAYERS))


def wrapped_output_shape(layer, input_shape):
    """A wrapper's output shape: its layer's, traced through the layer's call where the layer does not
    implement `compute_output_shape` (a user's layer seldom does; Keras traces it)."""
    try:
        return layer.compute_output_shape(input_shape)
    except NotImplementedError:
        return layer.compute_output_spec(keras.KerasTensor(input_shape)).shape


def call_with_values(layer, replacements, *args, **kwargs):
    """Calls `layer` with tensors in place of some of its variables.

    `replacements` is a list of `(variable, tensor)` pairs; gradients reach both.
    The state `layer` updates in the call (a `TargetedDropout`'s seed and step
    count) is written back to its variables.
    """
    replaced = {id(v): tensor for v, tensor in replacements}
    trainable = [replaced.get(id(v), v.value) for v in layer.trainable_variables]
    non_trainable = [replaced.get(id(v), v.value) for v in layer.non_trainable_variables]
    outputs, updated = layer.stateless_call(trainable, non_trainable, *args, **kwargs)
    for variable, given, value in zip(layer.non_trainable_variables, non_trainable, updated):
        if id(variable) not in replaced and value is not given:
            variable.assign(value)
    return outputs


_counted = _backend.fused(targeting.counted_thresholds)


def check_supported(layer, argument="layer"):
    if not isinstance(layer, SUPPORTED_LAYERS):
        names = ", ".join(cls.__name__ for cls in SUPPORTED_LAYERS)
        raise TypeError(
            f"{argument} must be one of {names}. Received: {argument}={type(layer).__name__}"
        )


@keras.saving.register_keras_serializable(package="keras_compact")
class TargetedDropout(ChecksCallInputs, keras.layers.Wrapper):
    """Dropout aimed at the weights or units a magnitude pruner would remove.

    Targeted Dropout (Gomez, Zhang, Kamalakara, Madaan, Swersky, Gal, Hinton,
    "Learning Sparse Networks Using Targeted Dropout", 2018): at every training
    step the wrapped layer's least important fraction `target_rate` of weights
    (or units) are the *candidates*, and each candidate is dropped with
    probability `drop_rate`. The network learns not to rely on them, so pruning
    them afterwards (`keras_compact.pruning.prune`) costs little accuracy.

    With `granularity="weight"` the candidates of each output unit (or filter) are
    the `target_rate` fraction of its incoming weights with the smallest |w|; with
    `granularity="unit"` they are the `target_rate` fraction of units whose weight
    column has the smallest L2 norm, dropped whole. The kernel variable is never
    changed: a mask multiplies it in the forward pass, in training only; at
    inference the wrapped layer runs untouched. The rates live in non-trainable
    variables, so `keras_compact.callbacks.TargetedDropoutRamp` can change them
    between steps without retracing.

    How the candidates are found: with `granularity="weight"`, at every
    training step each unit's candidates are exactly its
    `floor(target_rate * fan_in)` smallest |w| (fewer only where the last of
    them ties in magnitude with the next), the selection a sort would make,
    without a sort: last step's per-unit thresholds are corrected by a few
    vectorized counting passes over the kernel, and the few units still off are
    finished from a `top_k` of the weights near their threshold
    (`keras_compact.ops.targeting.search_thresholds`; on TensorFlow its
    counting runs as one XLA program). Its cost is a few passes over the kernel
    per step, the same order as the masking itself; the drops take 8 random
    bits per weight. Unit scores are few and are sorted at every step.
    `refresh_steps=n` searches only every `n` steps (and whenever
    `target_rate` changes) and keeps the thresholds in between: a little
    faster, but a unit's count drifts by the weights that cross its threshold,
    which costs accuracy after pruning (both measured in
    `benchmarks/results/pruning.md`).

    Args:
        layer: a `Dense`, `Conv1D`, `Conv2D`, `Conv3D`, `DepthwiseConv2D`,
            transposed (`Conv2DTranspose`, ...) or separable (`SeparableConv2D`,
            ...; its pointwise kernel is targeted) convolution. Its
            dtype policy decides the output's dtype, in training and at
            inference: for mixed precision give the policy to this layer
            (`Dense(8, dtype="mixed_float16")`), not only to the wrapper.
        target_rate: gamma, the fraction of weights (units) that are candidates, in [0, 1].
        drop_rate: alpha, the probability of dropping each candidate, in [0, 1].
        granularity: `"weight"`, `"unit"` or `"channel"`. By channel the layer
            does not choose: `keras_compact.pruning.targeted(model,
            granularity="channel")` wraps every member of a model's channel
            groups, and each draws its groups' drops in its own training
            call, as every other member does, with what the
            `keras_compact.callbacks.TargetedChannels` callback sets up
            (training without it raises).
        seed: optional integer seed of the dropout draws (by channel, the callback's).
        refresh_steps: with `granularity="weight"`, search for the thresholds
            every this many training steps (an integer >= 1; the default 1
            selects exactly at every step, as the paper does).

    Call arguments:
        inputs: the wrapped layer's inputs.
        training: whether to drop (only in training).

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((784,)),
    ...     TargetedDropout(keras.layers.Dense(300, activation="relu"), target_rate=0.5, drop_rate=0.5),
    ...     keras.layers.Dense(10, activation="softmax"),
    ... ])
    """

    expected_inputs = "what its wrapped layer takes: a tensor or a NumPy array"

    def __init__(
        self, layer, target_rate=0.5, drop_rate=0.5, granularity="weight", seed=None, refresh_steps=1, **kwargs
    ):
        check_supported(layer)
        errors = []
        for check, name, value in (
            (check_rate, "target_rate", target_rate),
            (check_rate, "drop_rate", drop_rate),
            (check_seed, "seed", seed),
        ):
            try:
                check(name, value)
            except ValueError as error:
                errors.append(str(error))
        errors.append(one_of("granularity", granularity, GRANULARITIES))
        if granularity == "channel" and (seed is not None or refresh_steps != 1):
            errors.append(
                "with granularity='channel' the drops are drawn with the TargetedChannels callback's seed: give it the seed, "
                f"and leave refresh_steps at 1. Received: seed={seed!r}, refresh_steps={refresh_steps!r}"
            )
        errors += positive_int_errors(refresh_steps=refresh_steps)
        raise_errors(errors)
        super().__init__(layer, **kwargs)
        self.supports_masking = bool(getattr(layer, "supports_masking", False))  # a padding mask passes, as unwrapped
        self.granularity = granularity
        self.seed = None if seed is None else int(seed)
        self.refresh_steps = int(refresh_steps)
        self._initial_rates = (float(target_rate), float(drop_rate))
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.drawn_by = None  # with granularity="channel": the draw the TargetedChannels callback sets up

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        target_rate, drop_rate = self._initial_rates
        self.target_rate = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(target_rate), trainable=False, name="target_rate"
        )
        self.drop_rate = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(drop_rate), trainable=False, name="drop_rate"
        )
        if self.granularity == "weight":
            # What the exact search starts from at the next step. Every replica computes the same
            # values from the same kernel. `thresholds_rate` and `steps` serve `refresh_steps > 1`;
            # `spacing` is last: files saved before it load, and it starts at 0 ("not yet measured").
            state = dict(trainable=False, aggregation="only_first_replica")
            units = kernel_columns(kernel_of(self.layer), self.layer).shape[1]
            self.thresholds = self.add_weight(shape=(units,), initializer="zeros", name="thresholds", **state)
            self.thresholds_rate = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(-1.0), name="thresholds_rate", **state
            )
            self.steps = self.add_weight(shape=(), initializer="zeros", dtype="int32", name="steps", **state)
            self.spacing = self.add_weight(shape=(units,), initializer="zeros", name="spacing", **state)
        if self.granularity == "channel":
            # The training steps drawn so far: with the TargetedChannels callback's seed, what every member
            # of a group draws its drops from (each is called once a step; shared layers block groups).
            self.draws = self.add_weight(shape=(), initializer="zeros", dtype="int32", name="draws", trainable=False,
                                         aggregation="only_first_replica")
        self.built = True

    def call(self, inputs, training=False):
        if not training:
            return self.layer(inputs)
        if self.granularity == "channel":
            return self._call_channels(inputs)
        kernel = kernel_of(self.layer)
        columns = kernel_columns(kernel.value, self.layer)
        scores = targeting.scores(ops.stop_gradient(columns), self.granularity)
        targeted = scores < self._thresholds(scores)
        dropped = targeting.dropped(targeted, self.drop_rate, self.seed_generator)
        if self.granularity == "unit":
            dropped = dropped[None, :]
        masked = ops.where(dropped, ops.cast(0.0, columns.dtype), columns)
        outputs = call_with_values(self.layer, [(kernel, columns_to_kernel(masked, self.layer))], inputs)
        # Under a mixed policy the kernel is read in the wrapper's compute dtype; the output is the
        # wrapped layer's, in training as at inference.
        return ops.cast(outputs, self.layer.compute_dtype)

    def _call_channels(self, inputs):
        if self.drawn_by is None:
            raise RuntimeError(
                f"TargetedDropout {self.name!r} has granularity='channel': its drops are drawn for the whole "
                "channel group, in every layer of the group alike, with what the "
                "keras_compact.callbacks.TargetedChannels callback sets up, which this training does not have. "
                "Pass callbacks=[TargetedChannels()] to fit (no layer can draw a group's drops alone). On JAX, "
                "Keras leaves a model without its weights when the first step of fit raises: make it again "
                "with targeted(...)."
            )
        kernel = kernel_of(self.layer)
        keep, bias_keep = self.drawn_by.kernel_masks(
            self.layer, self.target_rate.value, self.drop_rate.value, self.draws.value, self.seed_generator
        )
        self.draws.assign_add(ops.ones((), "int32"))
        replacements = [(kernel, kernel.value * ops.cast(keep, kernel.dtype))]
        if self.layer.use_bias:
            bias = self.layer.bias
            replacements.append((bias, bias.value * ops.cast(bias_keep, bias.dtype)))
        return ops.cast(call_with_values(self.layer, replacements, inputs), self.layer.compute_dtype)

    def compute_output_spec(self, inputs, training=False):
        return self.layer.compute_output_spec(inputs)

    def _thresholds(self, scores):
        count = targeting.candidate_count(self.target_rate, scores.shape[0])
        if self.granularity == "unit":
            return targeting.thresholds(scores, count)

        def searched():
            # The counting runs fused (XLA on TensorFlow); the rare sort outside it, where it is faster.
            found, settled, spacing = _counted(scores, count, self.thresholds.value, self.spacing.value)
            return targeting.sort_unsettled(scores, count, found, settled), spacing

        def found():
            # The first step (or the first after loading a file from before `spacing`) sorts.
            return _backend.cond(
                self.spacing.value[0] > 0,
                searched,
                lambda: (targeting.thresholds(scores, count), targeting.spacing_at(scores, count)),
            )

        if self.refresh_steps == 1:
            current, spacing = found()
        else:
            due = ops.logical_or(
                ops.equal(ops.mod(self.steps.value, self.refresh_steps), 0),
                ops.not_equal(self.thresholds_rate.value, self.target_rate.value),
            )
            current, spacing = _backend.cond(due, found, lambda: (self.thresholds.value, self.spacing.value))
        self.thresholds.assign(current)
        self.spacing.assign(spacing)
        self.thresholds_rate.assign(self.target_rate.value)
        self.steps.assign_add(ops.ones((), "int32"))
        return current

    def load_own_variables(self, store):
        # Files saved before `spacing` existed hold a prefix of today's variables (none of the
        # search's state with `refresh_steps=1`); the rest keep their initial values.
        own = self._trainable_variables + self._non_trainable_variables
        count = len(store.keys())
        if self.granularity == "channel" and count > 2 and np.shape(store["2"]) != ():
            # A file from before the draws moved into the step holds the last step's drops there: the rates only.
            count = 2
        if count < len(own):
            for index, variable in enumerate(own[:count]):
                variable.assign(store[str(index)])
            return
        super().load_own_variables(store)

    def set_rates(self, target_rate=None, drop_rate=None):
        """Sets the rates (each in [0, 1]) for the following steps."""
        for name, value, variable in (
            ("target_rate", target_rate, self.target_rate),
            ("drop_rate", drop_rate, self.drop_rate),
        ):
            if value is not None:
                check_rate(name, float(value))
                variable.assign(float(value))

    def compute_output_shape(self, input_shape):
        return wrapped_output_shape(self.layer, input_shape)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def get_config(self):
        config = super().get_config()
        target_rate, drop_rate = (
            (float(self.target_rate.numpy()), float(self.drop_rate.numpy()))
            if self.built
            else self._initial_rates
        )
        config.update(
            target_rate=target_rate,
            drop_rate=drop_rate,
            granularity=self.granularity,
            seed=self.seed,
            refresh_steps=self.refresh_steps,
        )
        return config
