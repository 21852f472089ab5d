import keras

from keras_compact._checks import ChecksCallInputs
from keras_compact._backend import TensorFlowOpsLayer
from keras_compact.layers.text_featurizer import TextFeaturizer
from keras_compact.layers.token_buckets import TokenBuckets

# The feature views of SGNN-style multi-view projection networks, by name.
VIEWS = {
    "words": dict(ngrams=2),  # word unigrams and bigrams
    "skip_grams": dict(ngrams=0, skip_grams=3),  # pairs of words 2 to 4 positions apart
    "chars": dict(ngrams=0, char_ngrams=(3, 5)),  # character 3- to 5-grams of "<token>"
}


@keras.saving.register_keras_serializable(package="keras_compact")
class TextViews(ChecksCallInputs, TensorFlowOpsLayer, keras.layers.Layer):
    """Sentences to the named inputs of text models: one featurizer per view.

    Each view is a `TextFeaturizer` (its outputs are named `"<view>_ids"` and
    `"<view>_weights"`) or a `TokenBuckets` (named `"<view>"`). The result is a
    dict, the form Keras models with named inputs take, so one input pipeline
    feeds a multi-view `projection_network(views=...)`, a `sequence_network`
    (`"tokens"`) and their trainer at once; each model takes the entries named
    like its inputs. On Android, one Java `TextFeaturizer` per view, built with
    that view's config, computes the same arrays.

    Built-in views (`VIEWS`): `"words"` (`TextFeaturizer(ngrams=2)`),
    `"skip_grams"` (`ngrams=0, skip_grams=3`) and `"chars"`
    (`ngrams=0, char_ngrams=(3, 5)`).

    Args:
        views: names of built-in views, or a dict from view name to a
            `TextFeaturizer` or `TokenBuckets` (or to the kwargs of a
            `TextFeaturizer`).

    Call arguments:
        inputs: a string tensor `[batch]` (or `[batch, 1]`).

    Returns:
        A dict of the views' outputs (ragged `[batch, None]` ids and weights;
        int32 `[batch, max_length]` token buckets).

    Example:

    >>> views = TextViews({"words": TextFeaturizer(ngrams=1), "tokens": TokenBuckets(100, 6)})
    >>> sorted(views(tf.constant(["play jazz"])))
    ['tokens', 'words_ids', 'words_weights']
    """

    expected_inputs = "a string tensor of sentences (batch,)"
    convert_hint = "tf.constant(sentences) or np.array(sentences)"

    needs_tensorflow = (
        "TextViews (strings and ragged ids)",
        "On another backend, featurize in the input pipeline: dataset.map(lambda text, y: (views(text), y)).",
    )

    def __init__(self, views, **kwargs):
        self.views = _views(views)
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.supports_jit = False

    def build(self, input_shape):
        for featurizer in self.views.values():
            featurizer.build(input_shape)

    def call(self, inputs):
        outputs = {}
        for name, featurizer in self.views.items():
            if isinstance(featurizer, TokenBuckets):
                outputs[name] = featurizer.call(inputs)
            else:
                outputs[f"{name}_ids"], outputs[f"{name}_weights"] = featurizer.call(inputs)
        return outputs

    def compute_output_spec(self, inputs):
        outputs = {}
        for name, featurizer in self.views.items():
            spec = featurizer.compute_output_spec(inputs)
            if isinstance(featurizer, TokenBuckets):
                outputs[name] = spec
            else:
                outputs[f"{name}_ids"], outputs[f"{name}_weights"] = spec
        return outputs

    def get_config(self):
        config = super().get_config()
        config["views"] = {name: _serialize(layer) for name, layer in self.views.items()}
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["views"] = {
            name: keras.saving.deserialize_keras_object(layer) for name, layer in config["views"].items()
        }
        return cls(**config)


def _serialize(featurizer):
    # The featurizers hold no state: their config is all there is (no build config).
    serialized = keras.saving.serialize_keras_object(featurizer)
    serialized.pop("build_config", None)
    return serialized


def _views(views):
    """Validates `views`; returns `{name: TextFeaturizer or TokenBuckets}` in the given order."""
    if isinstance(views, str) or not isinstance(views, (list, tuple, dict)) or not views:
        raise ValueError(
            "views must be a non-empty list of view names or a dict from view name to a TextFeaturizer or "
            f"TokenBuckets. Received: views={views!r}"
        )
    if not isinstance(views, dict):
        unknown = [name for name in views if name not in VIEWS]
        if unknown:
            raise ValueError(
                f"Unknown view name(s) {unknown}. Built-in views are {sorted(VIEWS)}; pass a dict "
                "{name: TextFeaturizer(...)} for others."
            )
        if len(set(views)) != len(views):
            raise ValueError(f"views must not repeat a name. Received: views={views!r}")
        views = {name: VIEWS[name] for name in views}
    result = {}
    for name, featurizer in views.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"A view name must be a Python identifier (it names model inputs). Received: {name!r}")
        if isinstance(featurizer, dict):
            featurizer = TextFeaturizer(**featurizer)
        if not isinstance(featurizer, (TextFeaturizer, TokenBuckets)):
            raise ValueError(
                f"View {name!r} must be a TextFeaturizer, a TokenBuckets or the kwargs of a TextFeaturizer. "
                f"Received: {type(featurizer).__name__}"
            )
        result[name] = featurizer
    return result
