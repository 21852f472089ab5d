import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_compact")
class ProjectionNet(keras.Model):
    """Joint training of a large trainer network and a small projection network.

    ProjectionNet (Ravi, "ProjectionNet: Learning Efficient On-Device Deep Networks
    Using Neural Projections", 2017) trains both networks on the same inputs with

        L = l1 * CE(trainer(x), y) + l2 * D(projection(x), trainer(x)) + l3 * CE(projection(x), y)

    where `D` is the cross-entropy of the projection network's prediction against
    the trainer's softmax (both softened by `temperature` and scaled by
    `temperature**2`, as in Hinton et al. 2015). The trainer's soft targets are
    held constant in `D`, so distillation teaches the projection network and
    never pulls the trainer towards it. Only `.projection`, a plain Keras model
    usually starting with a `ProjectionLayer`, is deployed.

    `fit` and `evaluate` report `loss`, `trainer_loss`, `distillation_loss`,
    `projection_loss`, `trainer_accuracy` and `projection_accuracy`; `predict`
    and calling the model return the projection network's output.

    Args:
        trainer: a Keras model from `x` to class probabilities (or logits).
        projection: a Keras model from `x` to class probabilities (or logits).
        l1: weight of the trainer's cross-entropy with the labels.
        l2: weight of the distillation term.
        l3: weight of the projection network's cross-entropy with the labels.
        temperature: softmax temperature of the distillation term, > 0.
        from_logits: whether both networks output logits rather than probabilities.

    Example:

    >>> trainer = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
    ...                             keras.layers.Dense(10, activation="softmax")])
    >>> projection = keras.Sequential([keras.Input((64,)), ProjectionLayer(60, 12),
    ...                                keras.layers.Dense(10, activation="softmax")])
    >>> net = ProjectionNet(trainer, projection)
    >>> net.compile(optimizer="adam")
    >>> history = net.fit(x_train, y_train, epochs=10)  # doctest: +SKIP
    >>> deployable = net.projection
    """

    def __init__(
        self, trainer, projection, l1=1.0, l2=0.1, l3=1.0, temperature=1.0, from_logits=False, **kwargs
    ):
        errors = []
        for name, value in (("trainer", trainer), ("projection", projection)):
            if not isinstance(value, keras.Model):
                errors.append(f"{name} must be a keras.Model. Received: {name}={type(value).__name__}")
        for name, value in (("l1", l1), ("l2", l2), ("l3", l3)):
            if not _is_number(value) or value < 0:
                errors.append(f"{name} must be a number >= 0. Received: {name}={value!r}")
        if not errors and l1 + l2 + l3 == 0:
            errors.append(f"At least one of l1, l2, l3 must be > 0. Received: l1={l1}, l2={l2}, l3={l3}")
        if not _is_number(temperature) or temperature <= 0:
            errors.append(f"temperature must be a number > 0. Received: temperature={temperature!r}")
        if errors:
            raise ValueError("; ".join(errors))
        super().__init__(**kwargs)
        self.trainer = trainer
        self.projection = projection
        self.l1, self.l2, self.l3 = float(l1), float(l2), float(l3)
        self.temperature = float(temperature)
        self.from_logits = bool(from_logits)
        self._loss_trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "trainer_loss", "distillation_loss", "projection_loss")
        }
        self._accuracies = {
            name: keras.metrics.CategoricalAccuracy(name=name)
            for name in ("trainer_accuracy", "projection_accuracy")
        }
        if trainer.built and projection.built:
            self.built = True

    def call(self, inputs, training=False):
        return self.projection(inputs, training=training)

    @property
    def metrics(self):
        return list(self._loss_trackers.values()) + list(self._accuracies.values())

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            losses, predictions, targets = self._joint_losses(x, y, sample_weight, training=True)
            # Gradients of the replicas are summed, so each replica's mean is scaled.
            loss = losses["loss"] / tf.distribute.get_strategy().num_replicas_in_sync
            if hasattr(self.optimizer, "scale_loss"):
                loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return self._update_metrics(losses, predictions, targets, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        losses, predictions, targets = self._joint_losses(x, y, sample_weight, training=False)
        return self._update_metrics(losses, predictions, targets, sample_weight)

    def _joint_losses(self, x, y, sample_weight, training):
        trainer_log_probs = self._log_probs(self.trainer(x, training=training))
        projection_log_probs = self._log_probs(self.projection(x, training=training))
        targets = _one_hot(y, trainer_log_probs.shape[-1])
        soft_targets = tf.nn.softmax(tf.stop_gradient(trainer_log_probs) / self.temperature)
        soft_log_probs = tf.nn.log_softmax(projection_log_probs / self.temperature)
        per_example = {
            "trainer_loss": -tf.reduce_sum(targets * trainer_log_probs, axis=-1),
            "distillation_loss": -tf.reduce_sum(soft_targets * soft_log_probs, axis=-1)
            * self.temperature**2,
            "projection_loss": -tf.reduce_sum(targets * projection_log_probs, axis=-1),
        }
        losses = {name: _weighted_mean(value, sample_weight) for name, value in per_example.items()}
        losses["loss"] = (
            self.l1 * losses["trainer_loss"]
            + self.l2 * losses["distillation_loss"]
            + self.l3 * losses["projection_loss"]
        )
        predictions = {"trainer_accuracy": trainer_log_probs, "projection_accuracy": projection_log_probs}
        return losses, predictions, targets

    def _log_probs(self, outputs):
        outputs = tf.cast(outputs, tf.float32)
        if self.from_logits:
            return tf.nn.log_softmax(outputs)
        return tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0))

    def _update_metrics(self, losses, predictions, targets, sample_weight):
        for name, tracker in self._loss_trackers.items():
            tracker.update_state(losses[name])
        for name, accuracy in self._accuracies.items():
            accuracy.update_state(targets, predictions[name], sample_weight=sample_weight)
        return {metric.name: metric.result() for metric in self.metrics}

    def get_config(self):
        config = super().get_config()
        config.update(
            trainer=keras.saving.serialize_keras_object(self.trainer),
            projection=keras.saving.serialize_keras_object(self.projection),
            l1=self.l1,
            l2=self.l2,
            l3=self.l3,
            temperature=self.temperature,
            from_logits=self.from_logits,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["trainer"] = keras.saving.deserialize_keras_object(config["trainer"])
        config["projection"] = keras.saving.deserialize_keras_object(config["projection"])
        return cls(**config)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _one_hot(labels, num_classes):
    """Integer labels `[batch]` / `[batch, 1]` or one-hot `[batch, C]` -> one-hot float32."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2 and labels.shape[-1] == num_classes and num_classes != 1:
        return tf.cast(labels, tf.float32)
    labels = tf.reshape(labels, [-1])
    return tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)


def _weighted_mean(values, sample_weight):
    """Mean over the batch of `values * sample_weight`, as Keras losses reduce."""
    if sample_weight is None:
        return tf.reduce_mean(values)
    weights = tf.reshape(tf.cast(sample_weight, values.dtype), [-1])
    return tf.reduce_mean(values * weights)
