"""Targeted Dropout by channel: the callback that sets up the drops each layer draws inside the training step."""

import keras
import numpy as np

from keras_compact import _keras_private
from keras_compact._checks import check_seed
from keras_compact.layers.targeted_dropout import TargetedDropout
from keras_compact.pruning import _channel, _channel_draw, _graph, _groups


class TargetedChannels(keras.callbacks.Callback):
    """Sets up the drops of a model made by `targeted(model, granularity="channel")`.

    Targeted Dropout (Gomez et al. 2018) by channel: at every training step, in
    every channel group (the channels that residual adds, concatenations and
    depthwise convolutions couple, `keras_compact.pruning.channel_groups`), the
    `target_rate` fraction of channels with the smallest group importance (the
    L2 norm of every member's weights that carry the channel, the magnitude
    criterion of `prune(..., granularity="channel")`) are the candidates, and
    each candidate is dropped with probability `drop_rate`: its filters, biases
    and the kernel rows that read it, in every member of the group at once, as
    channel pruning would remove them. No layer sees a whole group, so this
    callback reads the model's groups when training begins and gives every
    `TargetedDropout(granularity="channel")` layer what it needs to draw the
    drops of its groups in its own call, inside the training step, alike in
    every member: the weights that make the importance, and the seed, which
    with the step count decides the draws. Nothing runs between steps (any
    `steps_per_execution`). Training such a model without it raises an error.
    The rates are the layers' (`targeted`'s arguments, or
    `TargetedDropoutRamp`'s schedule). At inference nothing is dropped.

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
        graph = _groups.analyse(self.model)
        members = _channel.members(graph, targeted=True)
        outside, missing = sorted(set(self.layers) - members), sorted(members - set(self.layers))
        if outside or missing:
            raise ValueError(
                f"TargetedChannels drops the channels of prunable groups in every layer that carries them; in "
                f"{self.model.name!r}, " + (f"the layers {outside} are in no prunable group" if outside else
                                            f"the layers {missing} carry them unwrapped")
                + " (see keras_compact.pruning.channel_groups(model)). Make the model with "
                "keras_compact.pruning.targeted(model, granularity='channel')."
            )
        self.rates()
        seed = self.seed if self.seed is not None else int(np.random.default_rng().integers(2**31))
        self.draw_of_model = _channel_draw.ChannelDraw(graph, set(self.layers), seed)
        for layer in self.layers.values():
            layer.drawn_by = self.draw_of_model
        # A step traced before (by a fit without this callback, which raised) is traced again with it.
        self.model.make_train_function(force=True)

    def on_epoch_begin(self, epoch, logs=None):
        self.rates()  # a ramp sets them all; a user's own setting may not have

    def on_train_end(self, logs=None):
        for layer in self.layers.values():
            layer.drawn_by = None
        # The next fit traces its step again: without this callback it raises instead of reusing this one's.
        self.model.train_function = None

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

    def draw(self, step):
        """`{group producers: bool [size]}`: the channels kept at training step `step` (counted from 0
        over every fit of the model), at the layers' current rates and weights; what the layers draw
        in the step, computed here (after `fit` has begun) for a look."""
        target_rate, drop_rate = self.rates()
        draw = self.draw_of_model
        kept = keras.ops.convert_to_numpy(
            draw.kept(draw.roots, target_rate, drop_rate, step, keras.random.SeedGenerator(0)))
        return {draw.producers[root]: kept[start : start + size] for root, (start, size) in draw.offsets.items()}
