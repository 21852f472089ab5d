import json
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_compact import _keras_private
from keras_compact._backend import require_tensorflow, scale_loss_for_replicas
from keras_compact._checks import (
    bind_arguments, check_class_labels, describe_non_finite_weights, is_bool, is_number, keyword_only,
    raise_errors, renamed_arguments,
)


# The paper's symbols, the arguments' names before they said what they weigh: old name -> new name.
_RENAMED = {"l1": "trainer_loss_weight", "l2": "distillation_loss_weight", "l3": "projection_loss_weight"}


def _deprecated_attribute(owner, old, new):
    warnings.warn(f"{type(owner).__name__}.{old} is deprecated: read .{new}.", DeprecationWarning, stacklevel=3)
    return getattr(owner, new)


@keras.saving.register_keras_serializable(package="keras_compact")
class ProjectionNet(keras.Model):
    """Joint training of a large trainer network and a small projection network.

    ProjectionNet (Ravi, "ProjectionNet: Learning Efficient On-Device Deep Networks
    Using Neural Projections", 2017) trains both networks on the same inputs with

        L = l1 * CE(trainer(x), y) + l2 * D(projection(x), trainer(x)) + l3 * CE(projection(x), y)

    (the paper's `l1`, `l2`, `l3` are the arguments `trainer_loss_weight`,
    `distillation_loss_weight` and `projection_loss_weight`)

    where `D` is the cross-entropy of the projection network's prediction against
    the trainer's softmax (both softened by `temperature` and scaled by
    `temperature**2`, as in Hinton et al. 2015). The trainer's soft targets are
    held constant in `D`, so distillation teaches the projection network and
    never pulls the trainer towards it. Only `.projection`, a plain Keras model
    usually starting with a `ProjectionLayer`, is deployed.

    The inputs may be a dict of named inputs, such as a `TextViews` output; each
    network then gets the entries named like its own inputs, so a trainer reading
    `"ids"` and `"weights"` can teach a sequence network reading `"tokens"`.

    Networks with one output unit are binary classifiers (`Dense(1,
    activation="sigmoid")`, or one logit): their output is read as the
    probability of class 1, so the cross-entropies are binary cross-entropies
    and `D` distils `sigmoid(z / temperature)`. Labels are checked before
    training as Keras losses would check them: class ids in `[0, classes)` (0/1
    for one unit), or one-hot (or soft) rows of `classes` columns; strings, NaN
    and fractional ids are refused with the reason.

    `fit` and `evaluate` report `loss`, `trainer_loss`, `distillation_loss`,
    `projection_loss`, `trainer_accuracy` and `projection_accuracy`; `predict`
    and calling the model return the projection network's output.

    Args:
        trainer: a Keras model from `x` to class probabilities (or logits).
        projection: a Keras model from `x` to class probabilities (or logits).
        trainer_loss_weight: weight of the trainer's cross-entropy with the
            labels (the paper's `l1`; `l1=` still works, deprecated).
        distillation_loss_weight: weight of the distillation term (`l2`).
        projection_loss_weight: weight of the projection network's
            cross-entropy with the labels (`l3`).
        temperature: softmax temperature of the distillation term, > 0.
        from_logits: `None` (default) decides for each network from its last
            layer: probabilities after a softmax (`activation="softmax"` or a
            `Softmax` layer), logits otherwise; a network whose last layer cannot
            be seen (a subclassed model) is decided from its outputs on the first
            batch. `True`/`False` says logits/probabilities for both; a network
            said to output probabilities whose first-batch outputs are negative or
            do not sum to 1 raises a `ValueError` before training starts.

    Example:

    >>> trainer = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
    ...                             keras.layers.Dense(10, activation="softmax")])
    >>> projection = keras.Sequential([keras.Input((64,)), keras_compact.ProjectionLayer(60, 12),
    ...                                keras.layers.Dense(10, activation="softmax")])
    >>> net = ProjectionNet(trainer, projection)
    >>> net.compile(optimizer="adam")
    >>> history = net.fit(x_train, y_train, epochs=10)  # doctest: +SKIP
    >>> deployable = net.projection
    """

    @keyword_only
    def __init__(
        self, trainer, projection, *, trainer_loss_weight=1.0, distillation_loss_weight=0.1, projection_loss_weight=1.0,
        temperature=1.0, from_logits=None, **kwargs
    ):
        weights, names = renamed_arguments("ProjectionNet", ProjectionNet.__init__, kwargs, _RENAMED, dict(
            trainer_loss_weight=trainer_loss_weight, distillation_loss_weight=distillation_loss_weight,
            projection_loss_weight=projection_loss_weight,
        ))
        errors = []
        for name, value in (("trainer", trainer), ("projection", projection)):
            if not isinstance(value, keras.Model):
                errors.append(f"{name} must be a keras.Model. Received: {name}={type(value).__name__}")
        for new, value in weights.items():
            if not is_number(value) or value < 0:
                errors.append(f"{names[new]} must be a number >= 0. Received: {names[new]}={value!r}")
        if not errors and sum(weights.values()) == 0:
            given = ", ".join(f"{names[new]}={value}" for new, value in weights.items())
            errors.append(f"At least one of {', '.join(names.values())} must be > 0. Received: {given}")
        if not is_number(temperature) or temperature <= 0:
            errors.append(f"temperature must be a number > 0. Received: temperature={temperature!r}")
        if from_logits is not None and not is_bool(from_logits):
            errors.append(f"from_logits must be None, True or False. Received: from_logits={from_logits!r}")
        if not errors:
            errors += _networks_errors(trainer, projection)
        raise_errors(errors)
        super().__init__(**kwargs)
        self.trainer = trainer
        self.projection = projection
        self.trainer_loss_weight = float(weights["trainer_loss_weight"])
        self.distillation_loss_weight = float(weights["distillation_loss_weight"])
        self.projection_loss_weight = float(weights["projection_loss_weight"])
        self.temperature = float(temperature)
        self.from_logits = None if from_logits is None else bool(from_logits)
        from_logits = self.from_logits
        # Per network: True (logits), False (probabilities) or None (decided on the first batch).
        self._logits = {
            name: from_logits if from_logits is not None else _ends_in_logits(network)
            for name, network in (("trainer", trainer), ("projection", projection))
        }
        self._checked_first_batch = False
        self._loss_trackers, self._accuracies = _metrics()
        if trainer.built and projection.built:
            self.built = True

    @property
    def outputs_logits(self):
        """`{"trainer": bool, "projection": bool}`: which networks output logits (None: not yet known)."""
        return dict(self._logits)

    def fit(self, *args, **kwargs):
        self._check_first_batch(bind_arguments(keras.Model.fit, args, kwargs))
        return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        self._check_first_batch(bind_arguments(keras.Model.evaluate, args, kwargs))
        return super().evaluate(*args, **kwargs)

    def _check_first_batch(self, arguments):
        """Checks the labels, decides undecided networks from real outputs and
        checks those said to be probabilities.

        Runs eagerly, before Keras traces the training step: a network whose
        outputs are logits but is treated as probabilities trains silently to
        chance, and labels it cannot learn from give a loss that means nothing.
        """
        x, y = arguments.get("x"), arguments.get("y")
        if y is None and _is_array_like(x):
            raise ValueError(
                "ProjectionNet trains on labels: pass y (integer class ids or one-hot rows) with x, or a "
                "tf.data.Dataset of (x, y) pairs. Received: y=None"
            )
        if isinstance(x, tf.data.Dataset):  # one batch, read once (each read reshuffles a shuffled dataset)
            batch = next(iter(x.take(1)), None)
            x, labels = _split_batch(batch) if batch is not None else (None, None)
        else:
            x, labels = _first_inputs(x), _labels(y)
        if labels is not None:
            check_class_labels(labels, self._classes(), "y")
        if self._checked_first_batch and None not in self._logits.values():
            return
        if x is None:
            return
        for name, network in (("trainer", self.trainer), ("projection", self.projection)):
            outputs = np.asarray(keras.ops.convert_to_numpy(network(_inputs_for(network, x), training=False)), np.float64)
            if not np.all(np.isfinite(outputs)):
                raise ValueError(
                    f"On the first batch the {name} network's outputs are NaN or infinite: "
                    + ("x holds NaN or infinite values; clean them before training."
                       if _holds_non_finite(x) else
                       f"its weights or its layers do not give finite numbers.{describe_non_finite_weights(network)}")
                )
            probabilities = _are_probabilities(outputs)
            if self._logits[name] is None:
                self._logits[name] = not probabilities
            elif self._logits[name] is False and not probabilities:
                raise ValueError(
                    f"ProjectionNet was told that the {name} network outputs probabilities "
                    f"(from_logits={self.from_logits}), but on the first batch its outputs "
                    f"{_why_not_probabilities(outputs)}. End {name} with a softmax, or pass "
                    "from_logits=True (or None, to decide from each network's last activation)."
                )
        self._checked_first_batch = True

    def _classes(self):
        """The number of classes the labels may name: 2 for one-unit (binary) networks."""
        width = _width(self.projection) or _width(self.trainer)
        return None if width is None else max(width, 2)

    def call(self, inputs, training=False):
        return self.projection(_inputs_for(self.projection, inputs), training=training)

    @property
    def metrics(self):
        # Keras's own loss tracker ("loss", after compile) reports the total loss.
        tracker = _keras_private.loss_tracker(self)
        metrics = [tracker] if tracker is not None else []
        metrics += list(self._loss_trackers.values())
        metrics += list(self._accuracies.values())
        compiled = _keras_private.compile_metrics(self)
        if compiled is not None:
            metrics.append(compiled)
        return metrics

    def compile(self, *args, **kwargs):
        """`keras.Model.compile`; ProjectionNet computes its own loss, so `loss` must be left out.

        Metrics passed here are computed on the projection network's outputs.
        """
        arguments = bind_arguments(keras.Model.compile, args, kwargs)
        if arguments.get("loss") is not None:
            raise ValueError(
                "ProjectionNet computes its own joint loss (weighted by trainer_loss_weight, distillation_loss_weight, projection_loss_weight); compile takes no loss. "
                f"Received: loss={arguments['loss']!r}"
            )
        return super().compile(*args, **kwargs)

    def compile_from_config(self, config):
        # Keras skips a custom compile when loading; this one only checks its arguments.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The joint loss: the three weighted terms (`l1`, `l2`, `l3` of the paper), plus regularizers.

        Keras's training loop calls this with `y_pred` the projection network's
        outputs; the trainer network runs here, once per step. Updates the
        per-term and accuracy metrics.
        """
        if y_pred is None:
            y_pred = self.projection(_inputs_for(self.projection, x), training=training)
        trainer_outputs = self.trainer(_inputs_for(self.trainer, x), training=training)
        losses, predictions, targets = self._joint_losses(trainer_outputs, y_pred, y, sample_weight)
        for name, tracker in self._loss_trackers.items():
            tracker.update_state(losses[name], sample_weight=keras.ops.shape(targets)[0])
        for name, accuracy in self._accuracies.items():
            accuracy.update_state(targets, predictions[name], sample_weight=sample_weight)
        loss = losses["loss"]
        if self.losses:
            loss = loss + keras.ops.sum([_keras_private.additional_loss(self, extra) for extra in self.losses])
        return scale_loss_for_replicas(loss)

    def _joint_losses(self, trainer_outputs, projection_outputs, y, sample_weight):
        ops = keras.ops
        trainer_log_probs = self._log_probs("trainer", trainer_outputs)
        projection_log_probs = self._log_probs("projection", projection_outputs)
        targets = _one_hot(y, trainer_log_probs.shape[-1])
        soft_targets = ops.softmax(ops.stop_gradient(trainer_log_probs) / self.temperature)
        soft_log_probs = ops.log_softmax(projection_log_probs / self.temperature)
        per_example = {
            "trainer_loss": -ops.sum(targets * trainer_log_probs, axis=-1),
            "distillation_loss": -ops.sum(soft_targets * soft_log_probs, axis=-1) * self.temperature**2,
            "projection_loss": -ops.sum(targets * projection_log_probs, axis=-1),
        }
        losses = {name: _weighted_mean(value, sample_weight) for name, value in per_example.items()}
        losses["loss"] = (
            self.trainer_loss_weight * losses["trainer_loss"]
            + self.distillation_loss_weight * losses["distillation_loss"]
            + self.projection_loss_weight * losses["projection_loss"]
        )
        predictions = {"trainer_accuracy": trainer_log_probs, "projection_accuracy": projection_log_probs}
        return losses, predictions, targets

    def _log_probs(self, name, outputs):
        """`[batch, classes]` log-probabilities; one output unit is P(class 1) (or its logit)."""
        outputs = keras.ops.cast(outputs, "float32")
        logits = self._logits[name]
        if logits is None:
            raise ValueError(
                f"ProjectionNet cannot tell whether the {name} network outputs logits or probabilities "
                "(its last layer is not visible, and no first batch was seen by fit or evaluate). "
                "Pass from_logits=True or from_logits=False."
            )
        if outputs.shape[-1] == 1:  # binary: [log P(0), log P(1)]
            if logits:
                return keras.ops.log_softmax(keras.ops.concatenate([keras.ops.zeros_like(outputs), outputs], -1))
            outputs = keras.ops.concatenate([1.0 - outputs, outputs], -1)
        if logits:
            return keras.ops.log_softmax(outputs)
        return keras.ops.log(keras.ops.clip(outputs, 1e-7, 1.0))

    def get_config(self):
        config = super().get_config()
        config.update(
            trainer=keras.saving.serialize_keras_object(self.trainer),
            projection=keras.saving.serialize_keras_object(self.projection),
            trainer_loss_weight=self.trainer_loss_weight,
            distillation_loss_weight=self.distillation_loss_weight,
            projection_loss_weight=self.projection_loss_weight,
            temperature=self.temperature,
            from_logits=self.from_logits,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("trainer", "projection"):
            if keras.backend.backend() != "tensorflow" and '"ragged": true' in json.dumps(config[name], default=str):
                require_tensorflow(
                    f"This ProjectionNet's {name} network reads ragged feature ids (a text model), which",
                    "Load it in a TensorFlow-backend process; on JAX, train a sequence_network on dense token ids.",
                )
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config, _from_config=True)  # a file saved with l1, l2, l3 loads without a warning

    @property
    def l1(self):
        """Deprecated: `trainer_loss_weight`."""
        return _deprecated_attribute(self, "l1", "trainer_loss_weight")

    @property
    def l2(self):
        """Deprecated: `distillation_loss_weight`."""
        return _deprecated_attribute(self, "l2", "distillation_loss_weight")

    @property
    def l3(self):
        """Deprecated: `projection_loss_weight`."""
        return _deprecated_attribute(self, "l3", "projection_loss_weight")


def _inputs_for(network, x):
    """A dict of named inputs narrowed to those `network` reads, so the two networks may read different ones.

    For example a `TextViews` dict: the trainer reads `"ids"` and `"weights"`, a
    sequence network `"tokens"`. Anything else is passed on as it is.
    """
    if not isinstance(x, dict):
        return x
    names = [tensor.name for tensor in getattr(network, "inputs", None) or []]
    if not names or not all(name in x for name in names):
        return x
    return x[names[0]] if len(names) == 1 else {name: x[name] for name in names}


def _first_inputs(x, count=64):
    """Up to `count` examples of `x` (arrays, lists/dicts of arrays); else None."""
    if _is_array(x):
        return x[:count]
    if isinstance(x, (list, tuple)) and x and all(_is_array(v) for v in x):
        return type(x)(v[:count] for v in x)
    if isinstance(x, dict) and x and all(_is_array(v) for v in x.values()):
        return {key: value[:count] for key, value in x.items()}
    return None


def _is_array_like(x):
    """Arrays (or lists/dicts of them) as `fit` takes them with a separate `y`."""
    if isinstance(x, dict):
        return bool(x) and all(_is_array(v) or isinstance(v, list) for v in x.values())
    if isinstance(x, (list, tuple)):
        return bool(x) and all(_is_array(v) or isinstance(v, (list, int, float)) for v in x)
    return _is_array(x)


def _labels(y):
    """All of an array `y` (checked before training as a whole); None for what is not an array."""
    if y is None or (isinstance(y, (list, tuple)) and y and _is_array(y[0])):
        return None  # no labels, or one label array per output
    return y


def _split_batch(batch):
    """`(x, y)` of a dataset's batch (`(x, y)` or `(x, y, sample_weight)`; `x` alone gives no labels)."""
    if isinstance(batch, tuple) and len(batch) in (2, 3):
        return batch[0], batch[1]
    return batch, None


def _holds_non_finite(x):
    for value in keras.tree.flatten(x):
        values = value.flat_values if isinstance(value, tf.RaggedTensor) else value
        values = np.asarray(keras.ops.convert_to_numpy(values))
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            return True
    return False


def _is_array(value):
    return isinstance(value, (np.ndarray, tf.Tensor, tf.RaggedTensor)) or keras.ops.is_tensor(value)


def _are_probabilities(outputs):
    if outputs.shape[-1] == 1:  # one unit: a probability of class 1
        return bool(np.all((outputs >= 0) & (outputs <= 1)))
    # 1% leaves room for float16 softmax sums; logits essentially never sum to 1 that closely.
    return bool(np.all(outputs >= 0) and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-2))


def _why_not_probabilities(outputs):
    if np.any(~np.isfinite(outputs)):
        return "are not finite"
    if np.any(outputs < 0):
        return f"include negative values (min {outputs.min():.3g})"
    if outputs.shape[-1] == 1:
        return f"exceed 1 (max {outputs.max():.3g})"
    sums = outputs.sum(axis=-1)
    return f"have rows summing to {sums.min():.3g}..{sums.max():.3g}, not 1"


def _last_layer(network):
    """The layer computing `network`'s (first) output, looking into nested models; None if unknown."""
    layer = None
    outputs = _keras_private.graph_outputs(network) or []
    if isinstance(network, keras.Sequential) and network.layers:
        layer = network.layers[-1]
    elif outputs:
        history = _keras_private.keras_history(keras.tree.flatten(outputs)[0])
        layer = history.operation if history is not None else None
    if isinstance(layer, keras.Model) and layer is not network:
        return _last_layer(layer)
    return layer


def _ends_in_logits(network):
    """False after a softmax, True after any other known layer, None when it cannot be seen."""
    layer = _last_layer(network)
    if layer is None:
        return None
    if isinstance(layer, keras.layers.Softmax):
        return False
    activation = getattr(layer, "activation", None)
    if activation is keras.activations.sigmoid or (
        isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.sigmoid
    ):
        return False  # one unit (_output_errors refuses sigmoid over several)
    # log_softmax outputs are logits too: log_softmax leaves them as they are.
    return activation is not keras.activations.softmax


def _width(network):
    try:
        return keras.tree.flatten(network.outputs)[0].shape[-1]
    except (AttributeError, ValueError):
        return None


def _output_errors(name, network):
    """What a network's last layer says it cannot learn from class labels."""
    layer, width = _last_layer(network), _width(network)
    if layer is None or width is None:
        return []
    activation = getattr(layer, "activation", None)
    described = f"the {name} network ends in {type(layer).__name__} {layer.name!r}"
    if width == 1 and (activation is keras.activations.softmax or isinstance(layer, keras.layers.Softmax)):
        return [f"{described}: a softmax over one unit is always 1, so it learns nothing. Use one unit with "
                "activation='sigmoid' (binary) or one unit per class with a softmax"]
    if width > 1 and activation is keras.activations.sigmoid:
        return [f"{described}: a sigmoid over {width} units (multi-label) is not a distribution over classes. "
                "ProjectionNet classifies: end with a softmax over the classes, or one sigmoid unit (binary)"]
    return []


def _class_count_errors(trainer, projection):
    widths = {"trainer": _width(trainer), "projection": _width(projection)}
    if None not in widths.values() and widths["trainer"] != widths["projection"]:
        return [
            "trainer and projection must output the same number of classes. Received: "
            f"trainer outputs {widths['trainer']}, projection outputs {widths['projection']}"
        ]
    return []


def _one_hot(labels, num_classes):
    """Integer labels `[batch]` / `[batch, 1]` or one-hot `[batch, C]` -> one-hot float32."""
    ops = keras.ops
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[-1] == num_classes and num_classes != 1:
        return ops.cast(labels, "float32")
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    return ops.one_hot(labels, num_classes, dtype="float32")


def _weighted_mean(values, sample_weight):
    """Mean over the batch of `values * sample_weight`, as Keras losses reduce."""
    if sample_weight is None:
        return keras.ops.mean(values)
    weights = keras.ops.reshape(keras.ops.cast(sample_weight, values.dtype), (-1,))
    return keras.ops.mean(values * weights)


def _networks_errors(trainer, projection):
    """What keeps two Keras models from training as a ProjectionNet: their class counts, else their outputs."""
    errors = _class_count_errors(trainer, projection)
    return errors or [
        error for network in (("trainer", trainer), ("projection", projection)) for error in _output_errors(*network)
    ]


def _metrics():
    """`(loss trackers, accuracies)`, by name: what `fit` shows for each network."""
    losses = {name: keras.metrics.Mean(name=name) for name in ("trainer_loss", "distillation_loss", "projection_loss")}
    accuracies = {
        name: keras.metrics.CategoricalAccuracy(name=name) for name in ("trainer_accuracy", "projection_accuracy")
    }
    return losses, accuracies
