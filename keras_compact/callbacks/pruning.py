"""Gradual magnitude pruning during training (Zhu & Gupta 2017)."""

import warnings

import keras
import numpy as np

from keras_compact import _keras_private
from keras_compact._checks import check_rate, is_int, is_number, one_of, positive_int_errors, raise_errors
from keras_compact.ops import targeting
from keras_compact.pruning import _channel, _groups
from keras_compact.pruning._graph import unit_norms
from keras_compact.pruning.prune import SCOPES, PruningMask, unit_keep, weight_keep


class GradualPruning(keras.callbacks.Callback):
    """Raises the sparsity of every `PruningMask` in the model during training.

    Zhu & Gupta ("To prune, or not to prune", 2017), what tfmot's
    `prune_low_magnitude` does, for Keras 3 models: every `frequency` steps from
    `begin_step` to `end_step` the masks are set to the current sparsity
    `s_t = s_f * (1 - (1 - p)^power)`, `p` the progress from `begin_step` to
    `end_step`, with `prune`'s magnitude criterion and exact counts: the
    smallest |w| of each layer (`scope="layer"`, as Zhu & Gupta and tfmot), of
    each unit (`"unit"`, Targeted Dropout's criterion) or of all layers
    (`"global"`); whole units by L2 norm for layers made with
    `granularity="unit"`; whole channel groups (their members' summed
    magnitude, each group losing the sparsity's share with `scope="layer"`, all
    ranked together with `"global"`) for a model made with
    `prunable(model, granularity="channel")`, when `sparsity` is logged as the
    fraction of prunable channels removed. Weights (channels) pruned before rank first, so they stay pruned. `target_sparsity` may also
    be any callable `step -> sparsity`, called every `frequency` steps, and
    tfmot's `PolynomialDecay` / `ConstantSparsity` objects, whose own frequency
    decides when. Steps are the optimizer's iterations, so a model saved and
    reloaded mid-training (`.keras`, masks included) resumes the schedule where
    it was. The sparsity reached is logged as `sparsity` at every epoch's end.

    Make the model with `keras_compact.pruning.prunable(model)`; afterwards
    `keras_compact.pruning.strip` leaves plain layers (and `shrink` removes
    pruned units). With `TargetedDropout` layers in the model and
    `TargetedDropoutRamp`, Targeted Dropout aims at the weights pruned next.

    Args:
        target_sparsity: the final sparsity `s_f` in [0, 1], or a callable.
        begin_step: the step of the first pruning.
        end_step: the step at which `s_f` is reached (default: the last step of
            the `fit` it starts in; give it when training spans several `fit`s).
        frequency: steps between mask updates, an integer >= 1.
        power: the ramp's exponent (3 in the paper).
        scope: where weights are ranked: `"layer"`, `"unit"` or `"global"`
            (weight masks only).

    Example:

    >>> from keras_compact.pruning import prunable, strip
    >>> model = prunable(keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="relu"),
    ...                                    keras.layers.Dense(2)]))
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> x = np.random.default_rng(0).normal(size=(256, 20)).astype("float32")
    >>> history = model.fit(x, x[:, 0] > 0, epochs=3, verbose=0, callbacks=[GradualPruning(0.8, frequency=4)])
    >>> [round(s, 2) for s in history.history["sparsity"]]
    [0.35, 0.71, 0.8]
    >>> plain = strip(model)
    """

    def __init__(self, target_sparsity, begin_step=0, end_step=None, frequency=100, power=3, scope="layer"):
        super().__init__()
        if not callable(target_sparsity):
            check_rate("target_sparsity", target_sparsity)
        errors = []
        if not is_int(begin_step) or begin_step < 0:
            errors.append(f"begin_step must be an integer >= 0. Received: begin_step={begin_step!r}")
        elif end_step is not None and (not is_int(end_step) or end_step <= begin_step):
            errors.append(f"end_step must be None or an integer > begin_step ({begin_step}). Received: end_step={end_step!r}")
        errors += positive_int_errors(frequency=frequency)
        if not is_number(power) or power <= 0:
            errors.append(f"power must be a number > 0. Received: power={power!r}")
        errors.append(one_of("scope", scope, SCOPES))
        raise_errors(errors)
        self.target_sparsity, self.begin_step, self.end_step = target_sparsity, int(begin_step), end_step
        self.frequency, self.power, self.scope = int(frequency), float(power), scope
        self._end = end_step  # None until fit says how many steps it runs
        self._graph = None  # the channel groups, for a model pruned by channel

    def get_config(self):
        """The constructor arguments (a callable `target_sparsity` as the object itself)."""
        return dict(
            target_sparsity=self.target_sparsity, begin_step=self.begin_step, end_step=self.end_step,
            frequency=self.frequency, power=self.power, scope=self.scope,
        )

    def on_train_begin(self, logs=None):
        self.wrappers = [layer for layer in _keras_private.sublayers(self.model) if isinstance(layer, PruningMask)]
        if not self.wrappers:
            raise ValueError(
                f"GradualPruning found no PruningMask layer in the model {self.model.name!r}; make the model "
                "with keras_compact.pruning.prunable(model) (then compile and fit that one)."
            )
        channel = [layer.granularity == "channel" for layer in self.wrappers]
        if any(channel) and not all(channel):
            raise ValueError(
                "GradualPruning prunes a model by channel or by weight and unit, not both: make it with one "
                "keras_compact.pruning.prunable(model, granularity=...) call."
            )
        self._graph = _groups.analyse(self.model) if any(channel) else None
        if self._graph is not None:
            if self.scope == "unit":
                raise ValueError("scope='unit' ranks each unit's weights; by channel use 'layer' or 'global'.")
            self._kept = {}
        elif self.scope == "global" and any(layer.granularity != "weight" for layer in self.wrappers):
            raise ValueError(
                "scope='global' ranks weights across layers; every PruningMask needs granularity='weight'."
            )
        self._next = self._step()
        self._end = None  # at the first epoch, which says where a resumed fit (initial_epoch) starts
        if self.end_step is None and not self.params.get("steps"):
            raise ValueError(
                "GradualPruning needs end_step here: fit does not know how many steps an epoch has "
                "(a dataset of unknown length), so it cannot end the ramp at the last step. "
                "Received: end_step=None"
            )

    def on_epoch_begin(self, epoch, logs=None):
        if self._end is None:
            runs = self.params.get("epochs", 1) - epoch  # the epochs this fit runs: initial_epoch on
            self._end = self._ramp_end(runs)
            self._warn_if_short(runs)

    @property
    def masks(self):
        """Deprecated: `wrappers` (the model's `PruningMask` layers, set when training begins)."""
        warnings.warn("GradualPruning.masks is deprecated: read .wrappers (the PruningMask layers).",
                      DeprecationWarning, stacklevel=2)
        return self.wrappers

    def _ramp_end(self, epochs):
        """The step the ramp ends at: `end_step`, else the last step of this fit's `epochs`."""
        if self.end_step is not None:
            return self.end_step
        return max(self._next + epochs * self.params["steps"] - 1, self.begin_step + 1)

    def _warn_if_short(self, epochs):
        """Warns when this fit (`epochs` of it) ends before the ramp does, with the sparsity it reaches."""
        steps = epochs * (self.params.get("steps") or 0)
        if steps and not callable(self.target_sparsity) and self._next + steps < self._end:  # end_step = steps is fine
            last = self._next + steps - 1
            progress = min(max((last - self.begin_step) / (self._end - self.begin_step), 0.0), 1.0)
            reached = self.target_sparsity * (1.0 - (1.0 - progress) ** self.power)
            warnings.warn(
                f"GradualPruning ramps the sparsity from step {self.begin_step} to step {self._end}, but this fit "
                f"runs steps {self._next} to {last}: it reaches {reached:.1%} of "
                f"{self.target_sparsity:.1%} sparsity. Lower end_step, or fit for longer.",
                stacklevel=3,
            )

    def sparsity_at(self, step):
        """The scheduled sparsity at `step`, or None where the masks are left as they are.

        Without `end_step`, known once `fit` has started."""
        if callable(self.target_sparsity):
            value = self.target_sparsity(step)
            if isinstance(value, (tuple, list)):  # tfmot: (should_prune, sparsity)
                should_prune, value = value
                return float(np.asarray(value)) if bool(np.asarray(should_prune)) else None
            due = step >= self.begin_step and (step - self.begin_step) % self.frequency == 0
            return float(np.asarray(value)) if due else None
        if step < self.begin_step or step > self._end:
            return None
        if (step - self.begin_step) % self.frequency and step != self._end:
            return None
        progress = (step - self.begin_step) / (self._end - self.begin_step)
        return self.target_sparsity * (1.0 - (1.0 - progress) ** self.power)

    def on_train_batch_begin(self, batch, logs=None):
        # One step a batch: count here instead of reading the optimizer's counter every step.
        # `self._model`, not `self.model`: on JAX reading `model` writes the training state back
        # into the variables, which only a batch that changes the masks needs.
        step = self._next if self._model.steps_per_execution == 1 else self._step()
        self._next = step + 1
        sparsity = self.sparsity_at(step)
        if sparsity is not None:
            self.model  # noqa: B018 (JAX: brings the weights up to date; the next step reads the new masks)
            self.set_sparsity(check_rate(f"sparsity (from the schedule at step {step})", sparsity))

    def set_sparsity(self, sparsity):
        """Sets every mask to `sparsity` now, with `prune`'s criterion."""
        if self._graph is not None:
            self._set_channels(sparsity)
            return
        by_weight = {f"{index}": layer for index, layer in enumerate(self.wrappers) if layer.granularity == "weight"}
        for key, keep in (weight_keep(by_weight, sparsity, self.scope) if by_weight else {}).items():
            by_weight[key].set_mask(keep)
        for layer in self.wrappers:
            if layer.granularity == "unit":
                norms = unit_norms(layer)
                layer.set_mask(unit_keep(layer, targeting.unit_candidates(norms, int(round(sparsity * len(norms))))))

    def _set_channels(self, sparsity):
        importance = _channel.scores(self._graph, "magnitude", None, None, None)
        for root, kept in self._kept.items():
            importance[root] = np.where(kept, importance[root], -np.inf)  # pruned channels stay pruned
        scope = "global" if self.scope == "global" else "layer"
        self._kept = _channel.choose(self._graph, importance, min(sparsity, 1.0 - 1e-9), scope, None)
        masks = {layer.target.name: layer for layer in self.wrappers}
        for name, keep in _channel.kernel_keeps(self._graph, self._kept, every=True).items():
            if name in masks:
                masks[name].set_mask(keep)

    def reached(self):
        """Zeros over weights, all masked layers together (by channel: pruned channels over prunable ones)."""
        if self._graph is not None:
            kept = list(self._kept.values())
            return float(sum(np.sum(~k) for k in kept) / sum(k.size for k in kept)) if kept else 0.0
        masks = [keras.ops.convert_to_numpy(layer.mask) for layer in self.wrappers]
        return float(sum(mask.size - np.count_nonzero(mask) for mask in masks) / sum(mask.size for mask in masks))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["sparsity"] = self.reached()

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
