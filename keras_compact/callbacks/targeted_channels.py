"""Targeted Dropout by channel: the callback that draws, before each step, the channel groups it drops."""

import keras
import numpy as np

from keras_compact import _keras_private
from keras_compact._checks import check_seed
from keras_compact.layers.targeted_dropout import TargetedDropout
from keras_compact.pruning import _channel, _graph, _groups


class TargetedChannels(keras.callbacks.Callback):
    """Draws the channels Targeted Dropout drops in a model made by `targeted(model, granularity="channel")`.

    Targeted Dropout (Gomez et al. 2018) by channel: at every training step, in
    every channel group (the channels that residual adds, concatenations and
    depthwise convolutions couple, `keras_compact.pruning.channel_groups`), the
    `target_rate` fraction of channels with the smallest group importance (the
    L2 norm of every member's weights that carry the channel, the magnitude
    criterion of `prune(..., granularity="channel")`) are the candidates, and
    each candidate is dropped with probability `drop_rate`: its filters, biases
    and the kernel rows that read it, in every member of the group at once, as
    channel pruning would remove them. A group's channels are drawn once for all
    its members, so no layer can draw them alone: this callback reads the
    weights, draws on the host and sets each `TargetedDropout(granularity=
    "channel")` layer's `keep` before the step. Training such a model without it
    raises an error. The rates are the layers' (`targeted`'s arguments, or
    `TargetedDropoutRamp`'s schedule; put the ramp first in `callbacks`, so the
    draws of a step use the rates it set). At inference nothing is dropped.

    Args:
        seed: optional integer seed of the draws.

    Example:

    >>> model = keras_compact.pruning.targeted(model, 0.5, 0.5, granularity="channel")  # doctest: +SKIP
    >>> model.fit(x, y, callbacks=[TargetedChannels(seed=0)])  # doctest: +SKIP
    """

    def __init__(self, seed=None):
        super().__init__()
        check_seed("seed", seed)
        self.seed = None if seed is None else int(seed)
        self._random = np.random.default_rng(self.seed)

    def get_config(self):
        """The constructor arguments."""
        return {"seed": self.seed}

    def on_train_begin(self, logs=None):
        self.layers = {_graph.unwrapped(layer).name: layer for layer in _keras_private.sublayers(self.model)
                       if isinstance(layer, TargetedDropout) and layer.granularity == "channel"}
        if not self.layers:
            raise ValueError(
                f"TargetedChannels found no TargetedDropout(granularity='channel') layer in the model "
                f"{self.model.name!r}; make the model with keras_compact.pruning.targeted(model, "
                "granularity='channel')."
            )
        if self._model.steps_per_execution != 1:
            raise ValueError(
                "TargetedChannels draws the drops before every step, and Keras calls it once per "
                f"{self._model.steps_per_execution} steps here: compile {self.model.name!r} with "
                f"steps_per_execution=1. Received: steps_per_execution={self._model.steps_per_execution}"
            )
        self._graph = _groups.analyse(self.model)
        members = _channel.members(self._graph, targeted=True)
        outside, missing = sorted(set(self.layers) - members), sorted(members - set(self.layers))
        if outside or missing:
            raise ValueError(
                f"TargetedChannels drops the channels of prunable groups in every layer that carries them; in "
                f"{self.model.name!r}, " + (f"the layers {outside} are in no prunable group" if outside else
                                            f"the layers {missing} carry them unwrapped")
                + " (see keras_compact.pruning.channel_groups(model)). Make the model with "
                "keras_compact.pruning.targeted(model, granularity='channel')."
            )
        for layer in self.layers.values():
            layer.drawn_by = self
        # A step traced before (by a fit without this callback, which raised) is traced again with it.
        self.model.make_train_function(force=True)

    def on_train_end(self, logs=None):
        for layer in self.layers.values():
            layer.drawn_by = None
            layer.set_keep(np.ones(layer.keep.shape, bool))
        # The next fit traces its step again: without this callback it raises instead of reusing this one's.
        self.model.train_function = None

    def on_train_batch_begin(self, batch, logs=None):
        self.model  # noqa: B018 (JAX: brings the weights up to date; the next step reads the new drops)
        self.set_drops(self.draw())

    def rates(self):
        """`(target_rate, drop_rate)` of the layers, which must agree."""
        rates = {(float(keras.ops.convert_to_numpy(layer.target_rate)), float(keras.ops.convert_to_numpy(layer.drop_rate)))
                 for layer in self.layers.values()}
        if len(rates) > 1:
            raise ValueError(
                "TargetedChannels drops whole groups, so every TargetedDropout(granularity='channel') layer needs "
                f"the same rates; these layers have {sorted(rates)}. Set them with TargetedDropoutRamp or "
                "layer.set_rates(...) on all of them."
            )
        return rates.pop()

    def draw(self):
        """`{group root: bool [size]}`: the channels kept at this step."""
        target_rate, drop_rate = self.rates()
        importance = _channel.scores(self._graph, "magnitude", None, None, None)
        keep = {}
        for root, values in importance.items():
            candidates = np.argsort(values, kind="stable")[: int(np.floor(target_rate * values.size))]
            keep[root] = np.ones(values.size, bool)
            keep[root][candidates[self._random.random(candidates.size) < drop_rate]] = False
        return keep

    def set_drops(self, keep):
        """Sets every layer's `keep` from `{group root: bool [size]}`."""
        for name, mask in _channel.kernel_keeps(self._graph, keep, every=True).items():
            if name in self.layers:
                self.layers[name].set_keep(mask)
