import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_compact
from conftest import needs_shared_data
from keras_compact import ProjectionNet, TextFeaturizer
from keras_compact.models import lstm_trainer, projection_network
from tflite_export import export, predict

pytestmark = pytest.mark.tensorflow_backend("strings and ragged ids are TensorFlow tensors")


def _snips(count):
    (x_train, y_train), (x_test, y_test) = keras_compact.datasets.load("snips", needs_shared_data("snips"))
    return (x_train[:count], y_train[:count]), (x_test, y_test)


def _batches(featurizer, x, y, batch_size=64):
    data = tf.data.Dataset.from_tensor_slices((x.astype(str), y)).batch(batch_size)
    return data.map(lambda s, label: (tuple(featurizer(s)), label))


def test_snips_loader_reads_the_official_splits():
    ((x_train, y_train), (x_test, y_test)), info = keras_compact.datasets.load("snips", needs_shared_data("snips"), with_info=True)
    assert (len(x_train), len(x_test), len(info["dev"][0])) == (13084, 700, 700)
    assert info["classes"][0] == "UNK" and len(info["classes"]) == 8
    assert set(np.unique(y_train)) == set(range(1, 8))
    assert isinstance(x_train[0], str) and x_train[0] == "listen to westbam alumb allergic on google music"


def test_atis_multi_intent_labels_count_as_unk():
    ((_, y_train), (_, y_test)), info = keras_compact.datasets.load("atis", needs_shared_data("atis"), with_info=True)
    assert (len(y_train), len(y_test)) == (4478, 893) and info["classes"][0] == "UNK"
    # The test split has multi-intent labels (atis_flight#atis_airline, ...) missing from intent_label.txt.
    assert np.sum(y_train == 0) == 0 and 0 < np.sum(y_test == 0) < 20


def test_text_projection_net_trains_exports_and_agrees_in_litert(tmp_path):
    (x_train, y_train), (x_test, y_test) = _snips(3000)
    featurizer = TextFeaturizer(ngrams=2)
    net = ProjectionNet(lstm_trainer(8, num_buckets=4096, units=32), projection_network(8, 60, 12))
    net.compile(keras.optimizers.Adam(3e-3))
    net.fit(_batches(featurizer, x_train, y_train), epochs=2, verbose=0)
    ids, weights = featurizer(tf.constant(x_test.astype(str)))
    probabilities = net.projection.predict([ids, weights], verbose=0)
    assert np.mean(probabilities.argmax(-1) == y_test) > 0.8

    report = export(net, tmp_path / "intents.tflite", verify_with=[ids, weights])
    assert report.builtin_only and report.operators["LSH_PROJECTION"] == 1
    assert [(name, dtype) for name, dtype, _ in report.inputs] == [("ids", "int64"), ("weights", "float32")]
    assert report.top1_agreement == 1.0 and report.max_abs_diff < 1e-5
    # A sentence without features goes in as one feature of weight 0.
    empty = featurizer(tf.constant([""]))
    padded = [tf.ragged.constant([[0]], dtype=tf.int64), tf.ragged.constant([[0.0]])]
    np.testing.assert_allclose(predict(report.path, padded), net.projection(empty).numpy(), atol=1e-6)
