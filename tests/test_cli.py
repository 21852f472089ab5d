import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_compact import ProjectionLayer
from tflite_export import _cli

pytestmark = pytest.mark.tensorflow_backend("the command line runs on TensorFlow whatever the caller's backend; tested from JAX in test_backends.py")


def test_demo_trains_exports_and_prints_one_table(tmp_path, capsys):
    code = _cli.main(["demo", "--epochs", "3", "--num-hashes", "20", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "| trainer |" in out and "| projection |" in out
    assert "compression (trainer .tflite / projection .tflite)" in out
    assert "builtin only: True" in out
    assert (tmp_path / "projection.tflite").is_file() and (tmp_path / "trainer.tflite").is_file()


def test_demo_with_missing_mnist_files_exits_2_with_one_line(tmp_path, capsys):
    code = _cli.main(["demo", "--data", "mnist", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("keras-compact: error: MNIST IDX files") and "Traceback" not in err



def _python(*code_and_args, timeout=120):
    return subprocess.run(
        [sys.executable, *code_and_args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"},
    )


def test_help_and_version_answer_without_importing_tensorflow():
    result = _python("-c", (
        "import sys\n"
        "from tflite_export import _cli\n"
        "for argv in (['--help'], ['--version'], ['export', '--help'], ['demo', '--num-bits', '40']):\n"
        "    try:\n"
        "        _cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('TENSORFLOW LOADED' if 'tensorflow' in sys.modules else 'NO TENSORFLOW')\n"
    ))
    assert "NO TENSORFLOW" in result.stdout, result.stderr[-2000:]
    assert "keras-compact 0.1.0" in result.stdout and "usage: keras-compact export" in result.stdout


def test_python_m_names_itself_in_usage_and_the_cli_module_runs():
    result = _python("-m", "tflite_export", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: python -m tflite_export")
    result = _python("-m", "tflite_export._cli", "--version")
    assert result.returncode == 0 and "0.1.0" in result.stdout, result.stderr[-1000:]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["demo", "--num-bits", "40"], "argument --num-bits: expected an integer from 1 to 32, got 40"),
        (["demo", "--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
        (["export", "m.keras", "-o", "m.tflite", "--min-agreement", "1.5"], "expected a number from 0 to 1"),
        (["export", "m.keras", "-o", "m.tflite", "--min-snr", "loud"], "expected a number of dB or 'none'"),
    ],
)
def test_out_of_range_flags_exit_2_naming_the_flag(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(arguments)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_library_errors_name_flags_not_python_arguments(tmp_path, capsys):
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(tmp_path / "m.keras")
    code = _cli.main(["export", str(tmp_path / "m.keras"), "-o", str(tmp_path / "m.tflite"), "--quantize", "int8"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--quantize 'int8'" in err and "needs --representative" in err and "representative_data" not in err
    assert "keras_compact.quantization.quantize_aware" in err  # a dotted name keeps its words


def test_a_saved_model_of_two_inputs_and_outputs_exports_with_examples_named_in_the_npz(tmp_path, capsys):
    a, b = keras.Input((3,), name="zz"), keras.Input((5,), name="aa")
    joined = keras.layers.Concatenate()([a, b])
    model = keras.Model([a, b], [keras.layers.Dense(4, name="label")(joined),
                                 keras.layers.Reshape((), name="score")(keras.layers.Dense(1)(joined))])
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", aa=rng.uniform(size=(20, 5)).astype("float32"),
             zz=rng.uniform(size=(20, 3)).astype("float32"))
    code = _cli.main(["export", str(tmp_path / "m.keras"), "-o", str(tmp_path / "m.tflite"), "--verify",
                      str(tmp_path / "x.npz"), "--min-snr", "60"])
    out = capsys.readouterr().out
    assert code == 0 and "inputs: zz float32 [1, 3], aa float32 [1, 5]" in out
    assert "label (classes): agreement 100.00%" in out and "score (values): SNR" in out


def test_corrupt_keras_file_is_not_reported_as_missing(tmp_path, capsys):
    (tmp_path / "corrupt.keras").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "text.keras").write_text("hello")
    for name in ("corrupt.keras", "text.keras"):
        code = _cli.main(["export", str(tmp_path / name), "-o", str(tmp_path / "m.tflite")])
        err = capsys.readouterr().err
        assert code == 2 and "cannot load" in err and "not found" not in err.lower(), err


# The quiet demo's output (the table alone, both files named, no TensorFlow logs) is checked on the
# installed wheel: tests/test_packaging.py.


def test_saved_add_built_projection_network_exports_from_the_command_line(tmp_path):
    model = keras.Sequential()
    model.add(keras.Input((64,), name="pixels"))
    model.add(ProjectionLayer(20, 8, output_mode="signatures"))
    model.add(keras.layers.Embedding(20 * 2**8, 2))
    model.add(keras.layers.Flatten())
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "x.npz", pixels=np.random.default_rng(0).uniform(size=(30, 64)).astype("float32"))
    result = _python("-m", "tflite_export", "export", str(tmp_path / "model.keras"), "-o", str(tmp_path / "m.tflite"),
                     "--verify", str(tmp_path / "x.npz"), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LSH_PROJECTION x1" in result.stdout and "top-1 agreement 100.00%" in result.stdout
