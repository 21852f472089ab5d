"""Export's pairing on many generated models: how many export, verify and predict like Keras.

Each model comes from `tests/model_generator.py` (the suite's generator, with other seeds): 1-3
inputs with random names (float features of rank 1-3, or int32/int64 token ids into an
`Embedding`), a shared layer, a nested Sequential, constant products, and 1-15 outputs with
random names, of ranks 1-4 and different sizes. For each model:

- float32 `export` verifies (every output: class agreement 100% or SNR above 60 dB);
- `predict` with a list (the Keras model's order) and with a dict (input names) equals
  `model.predict` to 1e-4;
- int8 `export` (calibrated and compared on the same 32 random examples; `min_agreement=None`,
  `min_snr=None`) reports a figure for every output; the table gives their spread.

    python benchmarks/generated_models.py           # 100 models (about 10 min on 2 cores)
    python benchmarks/generated_models.py --quick   # 20 models

Writes benchmarks/results/generated_models.md (or *_quick.md).
"""

import sys
import tempfile
import time

import numpy as np

import common
import reporting

sys.path.insert(0, str(common.ROOT / "tests"))
from model_generator import examples, generated_model  # noqa: E402 (the suite's generator)
from tflite_export import export, predict  # noqa: E402

FIRST_SEED = 1000  # the suite uses seeds below 200


def _as_list(outputs):
    return outputs if isinstance(outputs, list) else [outputs]


def check(seed, folder):
    """One generated model's figures; `failure` names what did not hold (None when all did)."""
    model, descriptions = generated_model(seed)
    x = examples(model, descriptions, 32, seed)
    found = dict(seed=seed, inputs=len(model.inputs), outputs=len(model.outputs), failure=None)
    try:
        report = export(model, f"{folder}/float.tflite", verify_with=x)
        if [output.name for output in report.outputs] != model.output_names:
            raise AssertionError("outputs out of the Keras order")
        expected = _as_list(model.predict(x, verbose=0))
        by_name = {tensor.name: entry for tensor, entry in zip(model.inputs, x)}
        for got in (_as_list(predict(report.path, x)), _as_list(predict(report.path, by_name))):
            for want, out in zip(expected, got):
                np.testing.assert_allclose(out.reshape(want.shape), want, rtol=1e-4, atol=1e-4)
        quantized = export(model, f"{folder}/int8.tflite", verify_with=x, quantization="int8",
                           representative_data=x, min_agreement=None, min_snr=None)
        found["agreements"] = [o.agreement for o in quantized.outputs if o.kind == "classes"]
        found["snrs"] = [o.snr_db for o in quantized.outputs if o.kind == "values"]
        if len(quantized.outputs) != len(model.outputs):
            raise AssertionError("an output without a figure")
    except Exception as error:  # noqa: BLE001 - a failure is counted and named, not fatal
        found["failure"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    return found


def write_results(stem, results):
    rows = results["rows"]
    passed = [row for row in rows if row["failure"] is None]
    agreements = [a for row in passed for a in row["agreements"]]
    snrs = [s for row in passed for s in row["snrs"]]
    lines = [
        *reporting.heading("Generated models: export pairs every tensor by name", "generated_models.py",
                           results["quick"]),
        f"{len(passed)} of {len(rows)} generated models passed every check (seeds {FIRST_SEED} to "
        f"{FIRST_SEED + len(rows) - 1}; {sum(row['inputs'] for row in rows)} inputs, "
        f"{sum(row['outputs'] for row in rows)} outputs; {results['seconds']:.0f} s).",
        "",
        *reporting.table(["check", "result"], [
            ["float32 export verified, predict (list and dict) equal to model.predict",
             f"{len(passed)} / {len(rows)}"],
            ["int8: outputs of classes, agreement (min / median)",
             f"{min(agreements):.2%} / {np.median(agreements):.2%} over {len(agreements)}" if agreements else "none"],
            ["int8: outputs of values, SNR dB (min / median)",
             f"{min(snrs):.1f} / {np.median(snrs):.1f} over {len(snrs)}" if snrs else "none"],
        ]),
        "",
        "Random weights and random inputs: the int8 figures show every output is measured, not what a trained "
        "model keeps.",
    ]
    failures = [row for row in rows if row["failure"] is not None]
    if failures:
        lines += ["", "Failures:", "",
                  *reporting.table(["seed", "error"], [[row["seed"], row["failure"]] for row in failures])]
    reporting.write(stem, lines, end="\n")


def main(argv=None):
    args = common.parser(__doc__, "20 models", data=False).parse_args(argv)
    count = 20 if args.quick else 100
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        rows = [check(seed, folder) for seed in range(FIRST_SEED, FIRST_SEED + count)]
    results = dict(rows=rows, quick=args.quick, seconds=time.perf_counter() - start)
    write_results("generated_models_quick" if args.quick else "generated_models", results)
    return 0 if all(row["failure"] is None for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
