import keras
import tensorflow as tf

from keras_compact._checks import check_rate, check_seed
from keras_compact.ops import targeting

SUPPORTED_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
)


def call_with_values(layer, replacements, inputs, **kwargs):
    """Calls `layer` with tensors in place of some of its variables.

    `replacements` is a list of `(variable, tensor)` pairs; gradients reach both.
    """
    def value(variable):
        return next((tensor for v, tensor in replacements if v is variable), variable.value)

    trainable = [value(v) for v in layer.trainable_variables]
    non_trainable = [value(v) for v in layer.non_trainable_variables]
    outputs, _ = layer.stateless_call(trainable, non_trainable, inputs, **kwargs)
    return outputs


def check_supported(layer, argument="layer"):
    if not isinstance(layer, SUPPORTED_LAYERS):
        names = ", ".join(cls.__name__ for cls in SUPPORTED_LAYERS)
        raise TypeError(
            f"{argument} must be one of {names}. Received: {argument}={type(layer).__name__}"
        )


@keras.saving.register_keras_serializable(package="keras_compact")
class TargetedDropout(keras.layers.Wrapper):
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

    Args:
        layer: a `Dense`, `Conv1D`, `Conv2D` or `DepthwiseConv2D` layer.
        target_rate: gamma, the fraction of weights (units) that are candidates, in [0, 1].
        drop_rate: alpha, the probability of dropping each candidate, in [0, 1].
        granularity: `"weight"` or `"unit"`.
        seed: optional integer seed of the dropout draws.

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

    def __init__(self, layer, target_rate=0.5, drop_rate=0.5, granularity="weight", seed=None, **kwargs):
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
        if granularity not in targeting.GRANULARITIES:
            errors.append(
                f"granularity must be one of {targeting.GRANULARITIES}. "
                f"Received: granularity={granularity!r}"
            )
        if errors:
            raise ValueError("; ".join(errors))
        super().__init__(layer, **kwargs)
        self.granularity = granularity
        self.seed = None if seed is None else int(seed)
        self._initial_rates = (float(target_rate), float(drop_rate))
        self.seed_generator = keras.random.SeedGenerator(self.seed)

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
        self.built = True

    def call(self, inputs, training=False):
        if not training:
            return self.layer(inputs)
        kernel = self.layer.kernel.value
        columns = targeting.kernel_columns(kernel, depthwise=self.depthwise)
        mask = targeting.targeted_dropout_mask(
            columns, self.target_rate, self.drop_rate, self.granularity, self.seed_generator
        )
        masked = targeting.columns_to_kernel(columns * mask, tf.shape(kernel))
        return call_with_values(self.layer, [(self.layer.kernel, masked)], inputs)

    @property
    def depthwise(self):
        return isinstance(self.layer, keras.layers.DepthwiseConv2D)

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
        return self.layer.compute_output_shape(input_shape)

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
        )
        return config
