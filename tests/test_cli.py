from tflite_export import _cli


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
