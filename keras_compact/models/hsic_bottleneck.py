import threading

import keras
import numpy as np
import tensorflow as tf

from keras_compact import _keras_private
from keras_compact._backend import scale_loss_for_replicas
from keras_compact._checks import (
    bind_arguments, check_class_labels, is_int, is_number, keyword_only, one_of, raise_errors,
)
from keras_compact.ops import hsic_kernels as hsic

_ESTIMATORS = ("normalized_cca", "normalized", "hsic")


def _branches(blocks, sigma):
    """`(branches, sigmas, combined, errors)`: `blocks` as one list of blocks per sigma, and what is
    wrong with them (a `blocks` that is no list at all raises at once)."""
    if isinstance(blocks, keras.layers.Layer) or not isinstance(blocks, (list, tuple)):
        raise ValueError(
            "blocks must be a list of Keras layers, each trained as one block (a list of such lists, one "
            f"per sigma, for a sigma-combined network). Received: blocks={type(blocks).__name__}. For a "
            "Sequential, pass list(model.layers) to train each layer as a block, or [model] for one block."
        )
    combined = isinstance(sigma, (list, tuple))
    if combined and not all(isinstance(branch, (list, tuple)) for branch in blocks):
        raise ValueError(
            "A sigma-combined network takes one list of blocks per sigma. "
            f"Received: blocks={blocks!r}, sigma={sigma!r}"
        )
    branches = [list(branch) for branch in blocks] if combined else [list(blocks)]
    sigmas = list(sigma) if combined else [sigma]
    errors = []
    if not branches or not all(branches) or not all(
        isinstance(block, keras.layers.Layer) for branch in branches for block in branch
    ):
        errors.append(
            "blocks must be a non-empty list of Keras layers (a list of such lists, one per sigma, "
            f"for a sigma-combined network). Received: blocks={blocks!r}"
        )
    elif combined and len(branches) != len(sigmas):
        errors.append(
            f"A sigma-combined network needs one branch per sigma. Received: {len(branches)} branches, "
            f"sigma={sigma!r}"
        )
    return branches, sigmas, combined, errors


@keras.saving.register_keras_serializable(package="keras_compact")
class HSICBottleneck(keras.Model):
    """Layer-wise training by the HSIC bottleneck: no back-propagation between blocks.

    Ma, Lewis and Kleijn, "The HSIC Bottleneck: Deep Learning without
    Back-Propagation" (AAAI 2020). Each block `i` (a Keras layer or small model)
    is trained on its own objective over the batch,
    `HSIC(Z_i, X) - beta * HSIC(Z_i, Y)`: keep what predicts the labels `Y`,
    forget the rest of the input `X`. Each block's input is held constant
    (`stop_gradient`), so no gradient crosses from one block to another: there is
    no chain rule through depth. `fit` runs one forward pass per batch and updates
    every block from its own objective. The HSIC math (`keras_compact.ops.hsic`)
    runs in float32 even under a mixed-precision policy.

    `fit` logs `loss` (the sum of the objectives) and, per block `i`, `hsic_x_i`
    and `hsic_y_i`: nHSIC(Z_i, X) and nHSIC(Z_i, Y) in [0, 1], so the bottleneck
    can be watched forming. Calling the model returns the last block's output.
    Afterwards `post_train` trains a one-layer classifier on the frozen blocks, or
    `format` maps the last block's units to labels when it has one unit per class.

    Defaults follow the authors' MNIST configuration
    (choasma/HSIC-bottleneck, `config/general-hsicbt.yaml`: sigma 5, lambda_y 50,
    batch 512, SGD with momentum 0.9, learning rate 1e-4 (weight decay 1e-3), blocks
    of Linear + BatchNorm without affine + ReLU); compile with the optimizer of
    your choice (the benchmark records what it used).

    Sigma-combined networks (the paper's Figure 1b): `HSICBottleneck.sigma_combined`
    trains parallel branches, each with its own sigma, whose outputs are summed.

    Args:
        blocks: a list of Keras layers, applied in order.
        beta: weight of the label term, >= 0 (the authors' lambda_y).
        sigma: width of the Gaussian kernels, > 0 (scaled by the square root of
            each layer's width, as in the authors' code).
        estimator: `"normalized_cca"` (what the authors train with),
            `"normalized"` (nHSIC) or `"hsic"` (the biased estimator).
        num_classes: the number of classes; `None` takes it from the labels the
            first `fit` sees (integer labels) or from one-hot labels.

    Example:

    >>> blocks = [keras.Sequential([keras.layers.Dense(128),
    ...                             keras.layers.BatchNormalization(center=False, scale=False),
    ...                             keras.layers.ReLU()]) for _ in range(5)]
    >>> net = HSICBottleneck(blocks, num_classes=10)
    >>> net.compile(keras.optimizers.SGD(1e-3, momentum=0.9))
    >>> net.fit(x_train, y_train, batch_size=512, epochs=1)  # doctest: +SKIP
    >>> classifier = net.post_train(x_train, y_train, epochs=1)  # doctest: +SKIP
    """

    def __init__(self, blocks, beta=50.0, sigma=5.0, estimator="normalized_cca", num_classes=None, **kwargs):
        branches, sigmas, combined, errors = _branches(blocks, sigma)
        if not is_number(beta) or beta < 0:
            errors.append(f"beta must be a number >= 0. Received: beta={beta!r}")
        if not sigmas or not all(is_number(s) and s > 0 for s in sigmas):
            errors.append(f"sigma must be a number > 0 (or a list of them). Received: sigma={sigma!r}")
        errors.append(one_of("estimator", estimator, _ESTIMATORS))
        if num_classes is not None and (not is_int(num_classes) or num_classes < 2):
            errors.append(f"num_classes must be None or an integer >= 2. Received: num_classes={num_classes!r}")
        raise_errors(errors)
        super().__init__(**kwargs)
        self.branches = branches
        self.sigmas = [float(s) for s in sigmas]
        self.combined = combined
        self.beta = float(beta)
        self.estimator = estimator
        self.num_classes = None if num_classes is None else int(num_classes)
        # The last forward pass of this thread (a tf.distribute replica runs in its own thread).
        self._forward = threading.local()
        self._trackers = {}
        for name in self._block_names():
            for term in ("x", "y"):
                self._trackers[f"hsic_{term}_{name}"] = keras.metrics.Mean(name=f"hsic_{term}_{name}")

    @classmethod
    def sigma_combined(cls, branches, sigmas, **kwargs):
        """A network of parallel branches, branch `k` trained with `sigmas[k]`, outputs summed.

        Args:
            branches: one list of blocks per sigma (the last blocks of all branches
                must have the same output shape).
            sigmas: the kernel widths, e.g. `[1.0, 5.0, 10.0]`.
            **kwargs: the other arguments of `HSICBottleneck`.
        """
        return cls(branches, sigma=list(sigmas), **kwargs)

    @property
    def blocks(self):
        """All blocks, branch after branch."""
        return [block for branch in self.branches for block in branch]

    @property
    def metrics(self):
        # Keras's own loss tracker ("loss", after compile) reports the summed objective.
        tracker = _keras_private.loss_tracker(self)
        metrics = [tracker] if tracker is not None else []
        return metrics + list(self._trackers.values())

    def build(self, input_shape):
        for branch in self.branches:
            shape = tuple(input_shape)
            for block in branch:
                if not block.built:
                    block.build(shape)
                shape = block.compute_output_shape(shape)
        self.built = True

    def call(self, inputs, training=False):
        # In training no gradient crosses a block boundary; compute_loss reads every block's
        # outputs from this same forward pass (one pass per step, as Keras's loop makes it).
        branches = [self._branch_outputs(branch, inputs, training, isolate=training) for branch in self.branches]
        outputs = [branch[-1] for branch in branches]
        output = outputs[0] if len(outputs) == 1 else keras.ops.sum(keras.ops.stack(outputs), axis=0)
        self._forward.last = (output, branches)
        return output

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, positional arguments included, after checking the batch size and labels."""
        arguments = bind_arguments(keras.Model.fit, args, kwargs)
        batch_size, y = arguments.get("batch_size"), arguments.get("y")
        if batch_size is not None and (not is_int(batch_size) or batch_size < 2):
            raise ValueError(
                "HSIC needs at least 2 samples per batch (a batch of one has no dependence to measure). "
                f"Received: batch_size={batch_size!r}"
            )
        if y is not None and not isinstance(y, tf.data.Dataset):
            self._check_labels(np.asarray(y))
        elif isinstance(arguments.get("x"), tf.data.Dataset) and self.num_classes is not None:
            # The first batch as a sample (out-of-range labels in a dataset would give all-zero targets).
            batch = next(iter(arguments["x"].take(1)), None)
            if isinstance(batch, tuple) and len(batch) in (2, 3):
                self._check_labels(np.asarray(batch[1]))
        return super().fit(*args, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The sum of the blocks' objectives `HSIC(Z_i, X) - beta * HSIC(Z_i, Y)`, plus regularizers.

        Keras's training loop calls this right after `call` on the same batch; the
        blocks' outputs of that forward pass are reused, so each block runs once
        per step. Updates `hsic_x_i` and `hsic_y_i`. `sample_weight` is not used:
        HSIC is a statistic of the whole batch.
        """
        objective, values = self._objectives(x, y, self._block_outputs(x, y_pred, training))
        for name, (value_x, value_y) in zip(self._block_names(), values):
            self._trackers[f"hsic_x_{name}"].update_state(value_x)
            self._trackers[f"hsic_y_{name}"].update_state(value_y)
        loss = objective
        if self.losses:
            loss = loss + keras.ops.sum([_keras_private.additional_loss(self, extra) for extra in self.losses])
        return scale_loss_for_replicas(loss)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return self.get_metrics_result()

    @keyword_only
    def post_train(
        self,
        x,
        y,
        *,
        epochs=5,
        batch_size=256,
        learning_rate=0.005,
        momentum=0.9,
        validation_data=None,
        verbose="auto",
    ):
        """Freezes the blocks and trains one Dense+softmax layer on them with SGD.

        The paper's post-training step (defaults from the authors'
        `config/general-format.yaml`: batch 256, learning rate 0.005). The blocks
        are set `trainable=False` (batch normalization then uses its moving
        statistics) and shared with the returned model.

        Returns:
            A compiled functional Keras classifier `x -> class probabilities`, an
            ordinary model that `tflite_export.export` converts; its training
            history is `classifier.history`.
        """
        self._check_labels(np.asarray(y))
        inputs, features = self._frozen_features(np.asarray(x).shape[1:])
        outputs = keras.layers.Dense(self.num_classes, activation="softmax", name="post_trained")(features)
        classifier = keras.Model(inputs, outputs, name=f"{self.name}_classifier")
        classifier.compile(
            keras.optimizers.SGD(learning_rate, momentum=momentum),
            "sparse_categorical_crossentropy" if np.asarray(y).ndim == 1 else "categorical_crossentropy",
            metrics=["accuracy"],
        )
        classifier.fit(
            x, y, epochs=epochs, batch_size=batch_size, validation_data=validation_data, verbose=verbose
        )
        return classifier

    def format(self, x, y):
        """Maps the last block's units to labels by the best assignment on `(x, y)`.

        The paper's "format" alternative to post-training: when the network ends in
        one unit per class, the unit most active for an example names its class,
        once units and classes are matched so that the most training examples
        agree (Hungarian assignment on the unit x label counts).

        Returns:
            A functional Keras model whose outputs are the last block's outputs
            reordered so that `argmax` is the label (a fixed permutation layer).
        """
        labels = np.asarray(y)
        self._check_labels(labels)
        labels = labels.argmax(-1) if labels.ndim == 2 else labels.reshape(-1)
        outputs = np.asarray(self.predict(x, verbose=0)).reshape(len(labels), -1)
        if outputs.shape[1] != self.num_classes:
            raise ValueError(
                f"format needs a last block with one unit per class: {self.num_classes} units. "
                f"Received: {outputs.shape[1]} units; use post_train instead."
            )
        from scipy.optimize import linear_sum_assignment

        counts = np.zeros((self.num_classes, self.num_classes))
        np.add.at(counts, (outputs.argmax(-1), labels), 1)
        units, classes = linear_sum_assignment(-counts)
        permutation = np.zeros((self.num_classes, self.num_classes), dtype="float32")
        permutation[units, classes] = 1.0
        inputs, features = self._frozen_features(np.asarray(x).shape[1:])
        reorder = keras.layers.Dense(self.num_classes, use_bias=False, trainable=False, name="format")
        outputs = reorder(features)
        reorder.set_weights([permutation])
        return keras.Model(inputs, outputs, name=f"{self.name}_formatted")

    def get_config(self):
        config = super().get_config()
        serialized = [[keras.saving.serialize_keras_object(block) for block in branch] for branch in self.branches]
        config.update(
            blocks=serialized if self.combined else serialized[0],
            beta=self.beta,
            sigma=self.sigmas if self.combined else self.sigmas[0],
            estimator=self.estimator,
            num_classes=self.num_classes,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        combined = isinstance(config["sigma"], (list, tuple))
        branches = config["blocks"] if combined else [config["blocks"]]
        blocks = [[keras.saving.deserialize_keras_object(block) for block in branch] for branch in branches]
        config["blocks"] = blocks if combined else blocks[0]
        return cls(**config)

    def _block_names(self):
        if len(self.branches) == 1:
            return [str(i) for i in range(len(self.branches[0]))]
        return [f"{k}_{i}" for k, branch in enumerate(self.branches) for i in range(len(branch))]

    def _branch_outputs(self, branch, inputs, training, isolate=False):
        outputs, hidden = [], inputs
        for block in branch:
            hidden = block(keras.ops.stop_gradient(hidden) if isolate else hidden, training=training)
            outputs.append(hidden)
        return outputs

    def _block_outputs(self, x, y_pred, training):
        """Per branch, every block's outputs: those of the forward pass that gave `y_pred`, else a new one."""
        last = getattr(self._forward, "last", None)
        self._forward.last = None
        if last is not None and y_pred is not None and last[0] is y_pred:
            return last[1]
        if not self.built:
            self.build(tuple(x.shape))
        return [self._branch_outputs(branch, x, training, isolate=True) for branch in self.branches]

    def _targets(self, y):
        ops = keras.ops
        y = ops.convert_to_tensor(y)
        if len(y.shape) == 2 and y.shape[-1] is not None and y.shape[-1] > 1:
            return ops.cast(y, "float32")
        # fit checks array labels, and a dataset's first batch, against num_classes.
        return ops.one_hot(ops.cast(ops.reshape(y, (-1,)), "int32"), self.num_classes, dtype="float32")

    def _objectives(self, x, y, branch_outputs):
        """The summed block objectives and, per block, (nHSIC(Z, X), nHSIC(Z, Y))."""
        if self.num_classes is None:
            raise ValueError(
                "HSICBottleneck needs num_classes: pass it to the constructor (with a tf.data input), or "
                "call fit with integer or one-hot labels."
            )
        stop = keras.ops.stop_gradient
        targets = self._targets(y)
        objective, values = 0.0, []
        for outputs, sigma in zip(branch_outputs, self.sigmas):
            k_x = stop(hsic.gaussian_kernel(x, sigma))
            k_y = hsic.gaussian_kernel(targets, sigma)
            if self.estimator == "normalized_cca":
                r_x, r_y = stop(hsic.cca_operator(k_x)), hsic.cca_operator(k_y)
            for z in outputs:
                k_z = hsic.gaussian_kernel(z, sigma)
                if self.estimator == "normalized_cca":
                    r_z = hsic.cca_operator(k_z)
                    term_x = hsic.normalized_cca_from_operators(r_z, r_x)
                    term_y = hsic.normalized_cca_from_operators(r_z, r_y)
                elif self.estimator == "normalized":
                    term_x = hsic.normalized_hsic_from_kernels(k_z, k_x)
                    term_y = hsic.normalized_hsic_from_kernels(k_z, k_y)
                else:
                    term_x = hsic.hsic_from_kernels(k_z, k_x)
                    term_y = hsic.hsic_from_kernels(k_z, k_y)
                objective += term_x - self.beta * term_y
                k_z = stop(k_z)
                values.append(
                    (hsic.normalized_hsic_from_kernels(k_z, k_x), hsic.normalized_hsic_from_kernels(k_z, k_y))
                )
        return objective, values

    def _check_labels(self, labels):
        check_class_labels(labels, None, "y")  # strings, NaN, fractional ids, rows that are not one-hot
        if labels.ndim == 2 and labels.shape[1] > 1:
            classes = labels.shape[1]
            if self.num_classes is None:
                self.num_classes = int(classes)
            if classes != self.num_classes:
                raise ValueError(
                    f"One-hot labels must have num_classes={self.num_classes} columns. Received: {classes}"
                )
            return
        if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) and not np.all(labels == np.round(labels)):
            raise ValueError(
                "HSICBottleneck expects integer class labels (or one-hot rows). "
                f"Received: dtype={labels.dtype}, shape={labels.shape}"
            )
        if self.num_classes is None:
            self.num_classes = max(int(labels.max()) + 1, 2)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"Labels must be in [0, num_classes={self.num_classes}). "
                f"Received: labels from {labels.min()} to {labels.max()}"
            )

    def _frozen_features(self, input_shape):
        """Frozen blocks on a new input: (inputs, summed last-block outputs)."""
        for block in self.blocks:
            block.trainable = False
        inputs = keras.Input(input_shape, name="inputs")
        outputs = [self._branch_outputs(branch, inputs, training=False)[-1] for branch in self.branches]
        features = outputs[0] if len(outputs) == 1 else keras.layers.Add(name="sigma_sum")(outputs)
        return inputs, keras.layers.Flatten(name="features")(features) if len(features.shape) > 2 else features
