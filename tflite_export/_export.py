"""`export`, `verify` and `predict`: a Keras model to a verified `.tflite` file, in stages.

`export` checks its options once (`_Options.checked`: every argument that does not
depend on the model, a ValueError naming the argument), then, on the TensorFlow
backend:

1. *deployable*: the model the file is compared with (a `ProjectionNet`'s
   projection network), checked;
2. *lower*: a copy the converter can take (a quantization-aware model's batch
   norms folded, `_qat`; each `ProjectionLayer` cut out for LSH_PROJECTION or
   made a matrix, `_lowering` and `_projection`);
3. *examples*: the calibration data and what the file is compared on
   (`verify_with`, else the calibration data, else random inputs);
4. *convert* (`_convert`): the TFLite converter with the quantization's settings
   (`_quantize`), in the worker process (`_worker`: a crash there is a
   `ConverterCrashed`), its errors said in this package's terms, the
   LSH_PROJECTION operators spliced in, the inputs and outputs named and put in
   the Keras model's order (`_pairing`);
5. *encode*: dense, and sparse where it pays (`_encoding`);
6. *metadata*: what an app needs to feed and read the file (labels, input
   formats), in the file's metadata (`_metadata`);
7. *write and verify*: written beside `path`, run in LiteRT against the Keras
   model (`_verify`), every output compared (`_compare`), renamed into place
   only if each agrees (`_writing`);
8. *report*: an `ExportReport` holding the `VerifyReport`.

On JAX or PyTorch, a TensorFlow-backend Python runs them all on the model
saved to a `.keras` file (`_other_backend`), and stage 7 runs again here,
against the user's own model.
"""

import dataclasses
import functools
import json
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_compact._checks import (
    bool_errors, describe_non_finite_weights, is_int, is_number, keyword_only, one_of, positive_int_errors,
    raise_errors,
)
from keras_compact._data import batches as batches_of
from keras_compact._data import concatenated, is_stream, split_pair
from keras_compact._cloning import check_model
from keras_compact.models import ProjectionNet
from tflite_export import _compare
from tflite_export import _convert
from tflite_export import _encoding
from tflite_export import _hadamard
from tflite_export import _inspect
from tflite_export import _lowering
from tflite_export import _metadata
from tflite_export import _other_backend
from tflite_export import _pairing
from tflite_export import _projection
from tflite_export import _qat, _quantize
from tflite_export import _verify
from tflite_export import _worker
from tflite_export import _writing


@dataclasses.dataclass
class ExportReport:
    """What `export` wrote and how the file compares with the Keras model.

    Attributes:
        path: the `.tflite` file written.
        bytes: its size.
        operators: operator name -> count, in order of first use.
        builtin_only: True when every operator is a TFLite builtin (no custom or
            Flex op), so the stock LiteRT runtime on Android runs the file.
        inputs: `(name, dtype, shape)` of each input tensor; a shape of `-1` is a
            length the caller sets per example (LSH_PROJECTION feature lists).
        num_examples: examples compared in the LiteRT interpreter, one per invoke.
        top1_agreement: fraction of examples whose arg-max agrees (None when no
            output has more than one class): the file's top class holds the Keras
            output's largest value, so where that output ties (as the rounded
            outputs of a quantization-aware model do) each tied class agrees.
        max_abs_diff: largest absolute difference of any output value.
        latency_ms: median time of one `invoke()` in LiteRT over those examples.
        sparse: True when the file stores sparse (block-encoded) weight tensors.
        dense_bytes: size of the dense encoding.
        sparse_bytes: size of the sparse encoding, when it was made (else None).
        weight_sparsity: fraction of zero weights (kernels) in the Keras model.
        classifier_lowerings: `HadamardClassifier` name -> `"matmul"` (a
            FULLY_CONNECTED with the +/-1 matrix) or `"fwht"` (the fast transform).
        weight_tensors: name -> bytes of each constant tensor in the file, largest
            first (`tflite_export.inspect` reports the same for any file).
        non_finite_examples: examples left out of the comparison because an
            input holds NaN or an infinity (Keras gives NaN for them; the phone
            does not); `num_examples` counts the others.
        non_finite_outputs: examples with finite inputs left out because the
            Keras model's or the file's outputs are NaN or infinite (written
            only with `allow_non_finite=True`).
        disagreement_margin: where the top-1 classes differ, the median lead of
            the Keras model's top class over the file's choice (`VerifyReport`).
        outputs: an `OutputReport` per output, by name, in the Keras model's
            order: the agreement of an output of classes, the SNR of one of values.
        snr_db: the lowest SNR (dB) of the outputs of values (None without any).
        verification: the `VerifyReport` these comparison figures come from.
    """

    path: str
    bytes: int
    operators: dict
    builtin_only: bool
    inputs: list
    verification: "VerifyReport"
    sparse: bool = False
    dense_bytes: int = 0
    sparse_bytes: int = None
    weight_sparsity: float = 0.0
    classifier_lowerings: dict = dataclasses.field(default_factory=dict)
    weight_tensors: dict = dataclasses.field(default_factory=dict)

    # The comparison's figures, read from `verification`.
    num_examples = property(lambda self: self.verification.num_examples)
    top1_agreement = property(lambda self: self.verification.top1_agreement)
    max_abs_diff = property(lambda self: self.verification.max_abs_diff)
    latency_ms = property(lambda self: self.verification.latency_ms)
    non_finite_examples = property(lambda self: self.verification.non_finite_examples)
    disagreement_margin = property(lambda self: self.verification.disagreement_margin)
    outputs = property(lambda self: self.verification.outputs)
    snr_db = property(lambda self: self.verification.snr_db)

    @property
    def non_finite_outputs(self):
        return self.verification.non_finite_outputs + self.verification.file_non_finite_outputs

    def __str__(self):
        agreement = "n/a" if self.top1_agreement is None else f"{self.top1_agreement:.2%}"
        operators = ", ".join(f"{name} x{count}" for name, count in self.operators.items())
        inputs = ", ".join(f"{name} {dtype} {list(shape)}" for name, dtype, shape in self.inputs)
        return (
            f"{self.path}: {self.bytes:,} bytes; operators: {operators} "
            f"({'builtin only' if self.builtin_only else 'NOT builtin only'}); inputs: {inputs}; "
            f"LiteRT vs Keras on {self.num_examples} examples: top-1 agreement {agreement}, "
            + (
                f"({self.non_finite_examples} with NaN/inf inputs left out), "
                if self.non_finite_examples
                else ""
            )
            + (
                f"({self.non_finite_outputs} with NaN/inf outputs left out), "
                if self.non_finite_outputs
                else ""
            )
            + f"max abs diff {self.max_abs_diff:.3g}{_outputs_sentence(self.outputs)}; "
            f"{self.latency_ms:.3f} ms per example; "
            f"{self.weight_sparsity:.1%} zero weights, "
            + (
                f"sparse encoding {self.sparse_bytes:,} bytes vs dense {self.dense_bytes:,}"
                + (" (kept sparse)" if self.sparse else " (kept dense)")
                if self.sparse_bytes is not None
                else "dense encoding"
            )
        )


_SPARSE = ("auto", True, False)


@keyword_only
def export(
    model,
    path,
    verify_with=None,
    *,
    num_random_examples=64,
    seed=0,
    quantization=None,
    sparse="auto",
    representative_data=None,
    min_agreement=0.95,
    projection_lowering="builtin",
    labels=None,
    metadata=None,
    batch_size=1,
    allow_non_finite=False,
    float_layers=None,
    min_snr=20.0,
    output_kinds=None,
):
    """Converts a Keras model to a `.tflite` file and verifies it in LiteRT.

    Every `keras_compact.ProjectionLayer` that reads model inputs becomes TFLite's
    builtin `LSH_PROJECTION` operator (DENSE for `output_mode="bits"`, SPARSE for
    `output_mode="signatures"`) holding only the hash seeds; the other layers are
    converted by the TF converter. The file takes `batch_size` examples per
    invoke (1 with LSH_PROJECTION, which has no batch dimension). Its inputs,
    named after the Keras inputs:

    - a dense projection input: float32 `[n]`, the example's features;
    - sparse projection inputs: int64 `[num_features]` ids and, when the layer
      takes `[ids, weights]`, float32 `[num_features]` weights; resize both to the
      example's feature count (at least 1: pass one feature of weight 0 for an
      example without features) before each invoke;
    - any other input: its Keras shape with a batch dimension of `batch_size`.

    A `keras_compact.HadamardClassifier` left at `implementation="auto"` is written
    as its fast Walsh-Hadamard transform (no `N x C` matrix in the file, faster in
    LiteRT except at the smallest shapes); `implementation="matmul"` writes a
    FULLY_CONNECTED with the +/-1 matrix (`report.classifier_lowerings`).

    A `keras_compact.ProjectionNet` exports its deployable `.projection` network.
    The converter sees a *lowered copy* of the model (`keras.models.clone_model`,
    nested models included): `TargetedDropout` and `PruningMask` wrappers stripped
    as `keras_compact.pruning.strip` does (a pruned model exports with its zeros),
    classifiers and projections at their export lowerings. The model passed in,
    its layers and weights are never changed. Sequential models built with
    `.add()`, models reloaded from `.keras` files and functional models export
    alike; a ProjectionLayer inside a nested functional or Sequential model is
    reached too, one inside a subclassed layer is not (an error says so).

    A model built under a `mixed_float16` or `mixed_bfloat16` policy is
    converted computing in float32 (its variables are float32 already, and
    LiteRT's builtin operators take float32); `quantization="float16"` stores
    float16 weights. It is compared with the mixed-precision model as it is.

    Pruned weights can be stored as sparse tensors (the converter's
    `EXPERIMENTAL_SPARSITY`; LiteRT densifies them when it loads the file): with
    `sparse="auto"` both encodings are made when some kernel is at least half
    zeros, and the smaller one that the stock LiteRT runtime (default delegates
    included) runs is kept; the report shows both sizes.
    The converter and its int8 calibrator run in a TensorFlow worker process that
    export keeps between calls: a crash there (TensorFlow 2.21's calibrator on an
    `LSTM` or `GRU`) raises `ConverterCrashed`, and this process goes on.
    On the JAX (or PyTorch) backend the converter, which reads TensorFlow graphs,
    runs in a TensorFlow-backend Python on the model saved to a temporary `.keras`
    file (the same file a TensorFlow process makes from those weights); the
    comparison below is still with the model passed in, in this process.
    The file is written to a temporary file beside `path`, run from there in
    `ai_edge_litert.interpreter.Interpreter` on `verify_with` (or
    `num_random_examples` random examples) and compared with the Keras model's
    outputs, then renamed into place atomically (keeping the mode of a file it
    replaces; a new file gets `0666` less the umask). Examples with NaN or
    infinite inputs are left out of the comparison and counted
    (`report.non_finite_examples`, with a warning): Keras gives NaN for them,
    the phone's operators do not. Examples whose outputs are NaN or infinite,
    from Keras (NaN weights: a diverged training) or from the file only, are
    refused: nothing is written and a `ValueError` says which and names the
    non-finite weights, unless `allow_non_finite=True` (a warning then; the
    report counts them in `non_finite_outputs`). Unwritable targets fail
    before converting.

    Inputs and outputs pair by name: the file's inputs are named after the Keras
    model's inputs and its outputs after the model's outputs (the keys of a dict of
    outputs, else the layers computing them), both in the Keras model's order, which
    the metadata records too. A list of examples, here and in `verify`, `predict`
    and `quantization_report`, is in the Keras model's input order; a dict is keyed
    by input name. Every output is verified: `report.outputs` lists each by name
    with its figure.

    `path`: a symbolic link is written through (the link stays, the file it points
    to is replaced); missing parent directories are created; a path that exists and
    is not a regular file (a directory, a FIFO, a device) is refused, as is one
    that cannot be written, before anything is converted.

    Args:
        model: a built Keras model (functional, Sequential or `ProjectionNet`).
        path: where to write the `.tflite` file.
        verify_with: examples for the comparison: an array (or ragged tensor) for
            a single-input model, else a list with one entry per input (in the
            Keras model's order) or a dict keyed by input name; or a `tf.data.Dataset` or generator of such
            batches (`(x, y)` batches keep `x`), read up to 1,000 examples.
        num_random_examples: how many random examples to use without `verify_with`.
        seed: seed of those random examples.
        quantization: `None` (float32), `"dynamic"` (int8 weights, float
            activations), `"float16"` (float16 weights), `"int8"` (int8 weights
            and activations, float32 inputs and outputs; needs
            `representative_data`), `"int8_io"` (int8 inputs and outputs too;
            not for models with a ProjectionLayer, whose LSH bits enter as float)
            or `"int16x8"` (int8 weights, int16 activations: 256 times finer
            activation steps than int8, where LiteRT has 16x8 kernels for every
            operator; a file it cannot run is refused, with the reason).
            A model made by `keras_compact.quantization.quantize_aware` exports
            as `"int8"` or `"int8_io"` only, with the ranges it learned (batch
            norms folded into their convolutions first).
        representative_data: calibration inputs for `"int8"`/`"int8_io"`/`"int16x8"`
            (optional for a quantization-aware model: they calibrate only the
            tensors it has no learned range for, which stay float32 without them): an
            array (or a list/dict with one entry per input), a `tf.data.Dataset`
            or a generator of such batches (`(x, y)` pairs keep `x`); at most 300
            examples are used. Without `verify_with`, they are also what the file
            is compared on.
        projection_lowering: `"builtin"` (LSH_PROJECTION: only the seeds are
            stored) or `"matrix"` (dense inputs: the hash matrix as a
            FULLY_CONNECTED + GREATER + CAST; a larger file, much faster in
            LiteRT, quantizable).
        batch_size: examples per invoke in the file (its inputs' first
            dimension); 1 for models with a ProjectionLayer (LSH_PROJECTION has no
            batch dimension). `latency_ms` stays per example.
        labels: class names, one per output unit, stored in the file's metadata.
        metadata: a JSON-serialisable dict stored with them (for example the
            `TextFeaturizer` config an app needs: `featurizer.get_config()`).
        min_agreement: the least top-1 agreement with the Keras model, for every
            output that holds classes, for the export to succeed; below it
            nothing is written and a `ValueError` says which output and by how
            much. `None` accepts any agreement.
        min_snr: the least signal-to-noise ratio, in dB, of every other output
            (20 dB: an error of 10% of the output's RMS); `None` accepts any.
        output_kinds: `{output name: "classes" or "values"}` for outputs whose
            shape does not tell: by default an output with more than one entry
            along its last axis holds classes (compared by arg-max at every
            position: per example, pixel or token) and any other holds values
            (compared by SNR).
        sparse: `"auto"`, `True` (sparse encoding, an error if LiteRT cannot run
            it) or `False`.
        allow_non_finite: write the file even when the Keras model's or the
            file's outputs are NaN or infinite for finite inputs.
        float_layers: with `quantization="int8"`, layers to keep in float32
            (names, or a callable `layer -> bool`): the rest is int8, with
            QUANTIZE/DEQUANTIZE around them. `quantization_report(...).worst(3)`
            names the layers that lose the most.

    Returns:
        An `ExportReport`.

    Example:

    >>> model = keras.Sequential([keras.Input((64,), name="pixels"),
    ...                           keras_compact.ProjectionLayer(60, 12),
    ...                           keras.layers.Dense(10, activation="softmax")])
    >>> report = export(model, "projection.tflite")
    >>> report.builtin_only, report.operators["LSH_PROJECTION"]
    (True, 1)
    """
    options = _Options.checked(
        path=path, verify_with=verify_with, num_random_examples=num_random_examples, seed=seed,
        quantization=quantization, sparse=sparse, representative_data=representative_data,
        min_agreement=min_agreement, projection_lowering=projection_lowering, labels=labels, metadata=metadata,
        batch_size=batch_size, allow_non_finite=allow_non_finite, float_layers=float_layers, min_snr=min_snr,
        output_kinds=output_kinds,
    )
    reference = _deployable(model)
    _worker.start()  # it starts TensorFlow while this process prepares the model
    quantize_aware = _qat.is_quantize_aware(reference)
    if quantize_aware:
        _qat.check(reference, options.quantization, options.float_layers)
    _quantize.check_calibration(options.quantization, options.representative_data, quantize_aware)
    _quantize.check_integer_inputs(reference, options.quantization)
    options = dataclasses.replace(options, float_layers=_quantize.float_layer_names(
        reference, options.float_layers, options.quantization))
    if keras.backend.backend() != "tensorflow":
        report = _export_through_tensorflow(reference, options)
        return _qat.warn_float_parts(report, reference, options.quantization) if quantize_aware else report
    lowered = _lowering.lowered_copy(_qat.folded(reference) if quantize_aware else reference,
                                     options.projection_lowering,
                                     unroll_recurrent=options.quantization in _quantize.CALIBRATED)
    cuts = _projection.find_projections(lowered) if options.projection_lowering == "builtin" else []
    labels = _check_fits(lowered, cuts, options)
    representative, examples = _inputs(reference, options)
    convert = functools.partial(
        _convert.convert, lowered, cuts, options.quantization, representative=representative,
        batch_size=options.batch_size, float_layers=options.float_layers, reference=reference,
    )
    kinds = _kinds(reference, options.output_kinds)
    encodings = _encoding.encodings(convert, _encoding.kernels(lowered), options.sparse)
    model_bytes = _metadata.with_metadata(encodings.chosen, cuts, labels, options, kinds)
    verification = _write_verified(model_bytes, reference, examples, options, representative)
    report = _report(path, model_bytes, encodings, verification, lowered)
    return _qat.warn_float_parts(report, reference, options.quantization) if quantize_aware else report


@dataclasses.dataclass(frozen=True, eq=False)
class _Options:
    """`export`'s arguments, checked once (`_Options.checked`) and passed whole to its stages."""

    path: object
    verify_with: object = None
    num_random_examples: int = 64
    seed: int = 0
    quantization: str = None
    sparse: object = "auto"
    representative_data: object = None
    min_agreement: float = 0.95
    projection_lowering: str = "builtin"
    labels: list = None
    metadata: dict = None
    batch_size: int = 1
    allow_non_finite: bool = False
    float_layers: object = None
    min_snr: float = 20.0
    output_kinds: dict = None

    @classmethod
    def checked(cls, **arguments):
        """The options, after every check that does not depend on the model (a ValueError names the argument)."""
        options = cls(**arguments)
        _check_arguments(options)
        return options

    def converter_options(self):
        """What the TensorFlow-backend Python's `export` is given besides the model and the arrays (JSON)."""
        names = ("quantization", "sparse", "projection_lowering", "metadata", "batch_size", "float_layers",
                 "min_agreement", "min_snr", "output_kinds")
        return dict({name: getattr(self, name) for name in names}, allow_non_finite=bool(self.allow_non_finite),
                    labels=None if self.labels is None else [str(label) for label in self.labels])


def _export_through_tensorflow(reference, options):
    """`export` on the JAX or PyTorch backend: converted in a TensorFlow-backend Python, verified here."""
    representative, examples = _inputs(reference, options)
    model_bytes, report = _other_backend.convert(
        reference, examples, representative, options.path, **options.converter_options()
    )
    verification = _write_verified(model_bytes, reference, examples, options, representative)
    return _other_backend.report_with(report, options.path, verification)


def _write_verified(model_bytes, reference, examples, options, representative):
    """Stage 7: `model_bytes` written beside `options.path`, run in LiteRT against `reference` on
    `examples`, and renamed into place only if they agree (the `VerifyReport`)."""
    return _writing.write_verified(
        options.path, model_bytes, functools.partial(_verify_file, reference, examples, options, representative)
    )


def _kinds(reference, given):
    """Each output's kind, `"classes"` or `"values"`, in the Keras model's output order (`given`: the ones
    the caller names, a dict)."""
    return _compare.output_kinds(_pairing.output_names(reference), [tuple(t.shape) for t in reference.outputs],
                                 given)


def _inputs(reference, options):
    """`(calibration examples or None, comparison examples)`, one array per model input."""
    representative = None
    if options.representative_data is not None:
        representative = _quantize.representative_examples(reference, options.representative_data)
    return representative, _examples(reference, options.verify_with, representative, options.num_random_examples,
                                     options.seed)


def _check_arguments(options):
    """Checks every argument that does not depend on the model, before any work is done."""
    _writing.check_target(options.path)
    num_random_examples, projection_lowering = options.num_random_examples, options.projection_lowering
    min_agreement, batch_size, metadata = options.min_agreement, options.batch_size, options.metadata
    sparse, allow_non_finite = options.sparse, options.allow_non_finite
    if not is_int(num_random_examples) or num_random_examples < 1:
        raise ValueError(
            "num_random_examples must be a positive integer. "
            f"Received: num_random_examples={num_random_examples!r}"
        )
    _quantize.check(options.quantization)
    raise_errors([one_of("projection_lowering", projection_lowering, _projection.LOWERINGS)])
    if min_agreement is not None and not (is_number(min_agreement) and 0 <= min_agreement <= 1):
        raise ValueError(f"min_agreement must be None or a number in [0, 1]. Received: min_agreement={min_agreement!r}")
    raise_errors(positive_int_errors(batch_size=batch_size))
    if metadata is not None:
        try:
            json.dumps(metadata)
        except TypeError as error:
            raise ValueError(f"metadata must be JSON-serialisable: {error}") from error
    if not (sparse is True or sparse is False or sparse == "auto"):
        raise ValueError(f"sparse must be one of {_SPARSE}. Received: sparse={sparse!r}")
    raise_errors(bool_errors(allow_non_finite=allow_non_finite))
    _compare.check_min_snr(options.min_snr)
    _compare.check_kinds(options.output_kinds)


def _deployable(model):
    """The model `export` and `verify` compare against: a ProjectionNet's `.projection`, checked."""
    if isinstance(model, ProjectionNet):
        model = model.projection
    return check_model(model, "export")


def _check_fits(lowered, cuts, options):
    """Checks the options against the model; returns the labels as strings."""
    _projection.check_options(cuts, options.batch_size, options.quantization)
    labels = options.labels
    if labels is None:
        return None
    labels = [str(label) for label in labels]
    width = lowered.outputs[0].shape[-1]
    if width is not None and len(labels) != width:
        raise ValueError(f"labels must name each of the {width} output units. Received {len(labels)} labels.")
    return labels


def _examples(reference, verify_with, representative, num_random_examples, seed):
    """What the file is compared on: `verify_with`, else the calibration data, else random inputs."""
    if verify_with is not None:
        return _verify.model_inputs(reference, verify_with, "verify_with")
    if representative is not None:
        return representative
    return _verify.random_inputs(reference, num_random_examples, seed)


def _verify_file(reference, examples, options, representative, written):
    """Compares the written bytes with the Keras model; an output below `min_agreement` (classes) or
    `min_snr` (values) is a ValueError; so are non-finite outputs unless `allow_non_finite`, and a
    file LiteRT cannot run. `examples` are in the Keras model's input order."""
    path, quantization = options.path, options.quantization
    try:
        result = _parity(reference, written, examples, _kinds(reference, options.output_kinds))
    except _verify.UnpreparedFile as error:
        advice = (" LiteRT has no 16x8 kernel for some operators and shapes (a DEPTHWISE_CONV_2D whose int16 "
                  "accumulation could overflow, for one): use quantization='int8'."
                  if quantization == "int16x8" else "")
        raise ValueError(f"{error} Nothing was written to {path}.{advice}") from error
    _check_finite_outputs(reference, result, options.allow_non_finite, path)
    if not (result.num_examples + result.non_finite_outputs + result.file_non_finite_outputs):
        raise ValueError(
            f"Every one of the {result.non_finite_examples} examples to compare on has NaN or infinite "
            f"inputs; nothing was written to {path}. Pass finite examples with verify_with."
        )
    refusal = _refusal(result, options)
    if refusal:
        raise ValueError(refusal + _low_agreement_advice(reference, representative, examples, quantization))
    if result.non_finite_examples:
        warnings.warn(
            f"{result.non_finite_examples} of the {result.num_examples + result.non_finite_examples} examples "
            "have NaN or infinite inputs and were left out of the comparison: the Keras model gives NaN for "
            "them, while on the phone LSH_PROJECTION and most operators return ordinary numbers. Clean such "
            "inputs before the model.",
            stacklevel=4,
        )
    return result


def _refusal(result, options):
    """Why the file is refused (the first output under its threshold), or None."""
    several = len(result.outputs) > 1
    for output in result.outputs:
        which = f" in output {output.name!r}" if several else ""
        if output.kind == "classes" and options.min_agreement is not None and output.agreement is not None \
                and output.agreement < options.min_agreement:
            positions = " at every position" if several else ""
            return (
                f"The .tflite file agrees with the Keras model on the top-1 class{which}{positions} of only "
                f"{output.agreement:.2%} of {result.num_examples} examples (min_agreement={options.min_agreement}); "
                f"nothing was written to {options.path}. " + _margin_sentence(result.disagreement_margin)
                + f"(If {output.name!r} holds values rather than classes along its last axis, pass "
                f"output_kinds={{{output.name!r}: 'values'}}.) "
            )
        if output.kind == "values" and options.min_snr is not None and output.snr_db < options.min_snr:
            return (
                f"The .tflite file's output {output.name!r} differs from the Keras model's: SNR "
                f"{output.snr_db:.1f} dB over {result.num_examples} examples (min_snr={options.min_snr}; 20 dB is "
                f"an error of 10% of the output's RMS), max abs diff {output.max_abs_diff:.3g}; nothing was "
                f"written to {options.path}. "
            )
    return None


def _check_finite_outputs(reference, result, allow_non_finite, path):
    """Refuses a file when the Keras model's or the file's outputs are NaN or infinite
    (for finite inputs); with `allow_non_finite`, warns instead."""
    if not (result.non_finite_outputs or result.file_non_finite_outputs):
        return
    compared = result.num_examples + result.non_finite_outputs + result.file_non_finite_outputs
    if result.non_finite_outputs:
        problem = (
            f"The Keras model's outputs are NaN or infinite for {result.non_finite_outputs} of the {compared} "
            f"examples with finite inputs.{describe_non_finite_weights(reference)}"
        )
    else:
        problem = (
            f"The .tflite file's outputs are NaN or infinite for {result.file_non_finite_outputs} of the "
            f"{compared} examples where the Keras model's are finite."
        )
    if not allow_non_finite:
        raise ValueError(
            f"{problem} Nothing was written to {path}. Pass allow_non_finite=True to write the file anyway."
        )
    warnings.warn(f"{problem} The file was written (allow_non_finite=True).", stacklevel=5)


def _margin_sentence(margin):
    """For a refusal: how close the Keras model's own top two were where the file chose otherwise."""
    if margin is None:
        return ""
    return (f"Where they disagree, the Keras model's top class leads the file's choice by a median of {margin:.3g} "
            "in the model's own output. ")


def _low_agreement_advice(reference, representative, examples, quantization):
    """For a refusal: what to try; for post-training int8, the layers that add the most error."""
    if _qat.is_quantize_aware(reference):
        return ("A quantization-aware model's file computes in LiteRT's integer kernels, which round some values "
                "one step differently from training's float rounding; over many layers those steps add up, and "
                "first flip the classes the model nearly ties (a small median lead). Fine-tune it further, or "
                "accept it with a lower min_agreement (or min_agreement=None).")
    return ("Try another quantization, better representative_data, or pass min_agreement=None (min_snr=None "
            "for outputs of values)."
            + _worst_layers(reference, representative, examples, quantization))


def _worst_layers(reference, representative, examples, quantization):
    """For a refusal: the layers `quantization_report` finds adding the most error, in a sentence."""
    if quantization not in ("int8", "int8_io") or representative is None:  # what the debugger measures
        return ""
    from tflite_export._quantization_report import quantization_report

    by_name = lambda entries: dict(zip([t.name for t in reference.inputs], entries))  # noqa: E731
    report = quantization_report(reference, by_name(representative), quantization, debug_data=by_name(examples))
    return (f" The layers that add the most error, worst first (quantization_report on these examples): "
            f"{report.worst(3)}.")


def _parity(reference, model_bytes, examples, kinds, argument="verify_with"):
    """The file against the Keras model on `examples` (in the Keras model's input order), every
    output paired by name: a VerifyReport. Examples with non-finite inputs, or non-finite outputs
    from either side, are left out of the comparison and counted."""
    runner = _verify.LiteRTRunner(model_bytes)
    names = _pairing.output_names(reference)
    inputs_at = _pairing.keras_positions(runner.names, _pairing.input_names(reference), "inputs")
    outputs_at = _pairing.keras_positions(runner.output_names, names, "outputs")
    file_inputs = [examples[inputs_at.index(i)] for i in range(len(runner.names))]
    _verify.check_file_inputs(runner, file_inputs, argument)
    skip = _verify.non_finite_examples(examples)
    if skip.all():
        return VerifyReport(0, None, float("nan"), float("nan"), int(skip.sum()))
    got, seconds = _verify.run_litert(runner, file_inputs, argument)
    got = [got[i] for i in outputs_at]
    expected = _verify.run_keras(reference, examples)
    keras_bad = _verify.non_finite_outputs(expected) & ~skip
    file_bad = _verify.non_finite_outputs(got) & ~skip & ~keras_bad
    compared = ~(skip | keras_bad | file_bad)
    outputs, margin = (), None
    if compared.any():
        outputs = tuple(_compare.compare(expected, got, names, kinds, skip=~compared))
        margin = _compare.disagreement_margin(expected, got, kinds, skip=~compared)
    agreements = [output.agreement for output in outputs if output.agreement is not None]
    return VerifyReport(
        int(compared.sum()), min(agreements) if agreements else None,
        max((output.max_abs_diff for output in outputs), default=float("nan")), seconds * 1e3, int(skip.sum()),
        non_finite_outputs=int(keras_bad.sum()), file_non_finite_outputs=int(file_bad.sum()),
        disagreement_margin=margin, outputs=outputs,
    )


def _report(path, model_bytes, encodings, verification, lowered):
    """The ExportReport: what `inspect` reads in the file, plus the verification."""
    inspection = _inspect.inspect(model_bytes)
    # Both encodings' sizes are reported as files, with the same metadata.
    metadata_bytes = len(model_bytes) - len(encodings.chosen)
    return ExportReport(
        path=os.fspath(path),
        bytes=inspection.bytes,
        operators=inspection.operators,
        builtin_only=inspection.builtin_only,
        inputs=[(info.name, info.dtype, tuple(info.shape)) for info in inspection.inputs],
        verification=verification,
        sparse=encodings.chosen is encodings.sparse,
        dense_bytes=len(encodings.dense) + metadata_bytes,
        sparse_bytes=None if encodings.sparse is None else len(encodings.sparse) + metadata_bytes,
        weight_sparsity=encodings.weight_sparsity,
        classifier_lowerings=_hadamard.lowerings(lowered),
        weight_tensors=inspection.weight_tensors,
    )


@dataclasses.dataclass
class VerifyReport:
    """Parity of a `.tflite` file with its Keras model (see `ExportReport`).

    `disagreement_margin`: over the examples whose top-1 classes differ, the median of how far the
    Keras model's top class leads the file's choice in the Keras model's own output (None when they
    never differ). Near 0 the two split near-ties; a large margin is a file computing something else.
    `outputs`: an `OutputReport` per output, by name, in the Keras model's order: the agreement of an
    output of classes (over every position), the SNR of an output of values. `top1_agreement` is the
    lowest agreement of them, `snr_db` the lowest SNR of the outputs of values.
    """

    num_examples: int
    top1_agreement: float
    max_abs_diff: float
    latency_ms: float
    non_finite_examples: int = 0
    non_finite_outputs: int = 0
    file_non_finite_outputs: int = 0
    disagreement_margin: float = None
    outputs: tuple = ()

    @property
    def snr_db(self):
        """The lowest SNR (dB) of the outputs that hold values; None when every output holds classes."""
        figures = [output.snr_db for output in self.outputs if output.kind == "values"]
        return min(figures) if figures else None

    def __str__(self):
        agreement = "n/a" if self.top1_agreement is None else f"{self.top1_agreement:.2%}"
        left_out = [
            f"{count} {what}"
            for count, what in (
                (self.non_finite_examples, "with NaN/inf inputs"),
                (self.non_finite_outputs, "with NaN/inf Keras outputs"),
                (self.file_non_finite_outputs, "with NaN/inf outputs from the file only"),
            )
            if count
        ]
        return (
            f"LiteRT vs Keras on {self.num_examples} examples: top-1 agreement {agreement}, "
            f"max abs diff {self.max_abs_diff:.3g}, {self.latency_ms:.3f} ms per example"
            + (f" ({', '.join(left_out)} left out)" if left_out else "")
            + _outputs_sentence(self.outputs)
        )


def _outputs_sentence(outputs):
    """Each output's figure, when there is more than one output or one of values."""
    if len(outputs) < 2 and all(output.kind == "classes" for output in outputs):
        return ""
    return "; outputs: " + "; ".join(str(output) for output in outputs)


def verify(model, tflite, inputs, *, output_kinds=None):
    """Runs `tflite` in LiteRT on `inputs` and compares it with the Keras `model`.

    The file's inputs and outputs pair with the model's by name (as `export` writes
    them); a file of one input and one output pairs by position.

    Args:
        model: the Keras model the file was exported from (a `ProjectionNet`
            is compared through its `.projection`; wrappers are stripped).
        tflite: path of the `.tflite` file, or its bytes.
        inputs: examples, as `export`'s `verify_with`: a list is in the Keras
            model's input order, a dict keyed by input name.
        output_kinds: as `export`'s; by default the kinds the file's metadata
            records, else each output's shape decides.

    Returns:
        A `VerifyReport` (per-output figures, top-1 agreement, max abs difference, median latency).

    Example:

    >>> verify(model, "model.tflite", x_test).top1_agreement  # doctest: +SKIP
    1.0
    """
    model = _deployable(model)
    model_bytes = _read_file(tflite)
    examples = _verify.model_inputs(model, inputs, "inputs")
    recorded = _inspect.recorded_kinds(model_bytes, _pairing.output_names(model))
    kinds = _kinds(model, {**recorded, **_compare.check_kinds(output_kinds)})
    report = _parity(model, model_bytes, examples, kinds, "inputs")
    if report.non_finite_outputs or report.file_non_finite_outputs:
        side = "the Keras model's" if report.non_finite_outputs else "the file's"
        warnings.warn(
            f"{report.non_finite_outputs + report.file_non_finite_outputs} examples were left out of the "
            f"comparison: {side} outputs are NaN or infinite for them.{describe_non_finite_weights(model)}",
            stacklevel=2,
        )
    return report


def predict(tflite, examples):
    """Runs a `.tflite` file in LiteRT, one example per invoke, like `model.predict`.

    Args:
        tflite: path of a `.tflite` file, or its bytes.
        examples: for a single-input model an array (or `tf.RaggedTensor` of
            feature ids) whose first axis is the examples; else a list with one
            such entry per input, in the file's input order (`ExportReport.inputs`:
            the Keras model's order, for files `export` writes now; files written
            before outputs were named hold their inputs sorted by name); or a dict
            keyed by input name (extra keys are ignored, so a `TextViews` output
            feeds any text model); or a `tf.data.Dataset` or generator of such
            batches (`(x, y)` batches keep `x`), read to its end.

    Returns:
        The outputs stacked over the examples: one array, or a list of arrays
        for a model with several outputs, in the Keras model's output order
        (the file's `inspect(...).outputs`).

    Example:

    >>> probabilities = predict("projection.tflite", x_test)  # doctest: +SKIP
    """
    model_bytes = _read_file(tflite)
    runner = _verify.LiteRTRunner(model_bytes)
    if is_stream(examples):  # every batch of a dataset or generator, as model.predict reads them
        read = batches_of(examples, float("inf"), "examples")
        batches = [_file_inputs(runner, split_pair(batch)[0]) for batch in read]
        inputs = [concatenated([batch[i] for batch in batches]) for i in range(len(runner.names))]
    else:
        inputs = _file_inputs(runner, examples)
    _verify.check_file_inputs(runner, inputs)
    outputs, _ = _verify.run_litert(model_bytes, inputs)
    bad = _verify.non_finite_outputs(outputs) & ~_verify.non_finite_examples(inputs)
    if bad.any():
        warnings.warn(
            f"The file's outputs are NaN or infinite for {int(bad.sum())} of {len(bad)} examples with finite "
            "inputs: its weights or its quantization ranges may hold NaN (export refuses such files unless "
            "allow_non_finite=True).",
            stacklevel=2,
        )
    return outputs[0] if len(outputs) == 1 else outputs


def _file_inputs(runner, examples):
    inputs = _pairing.entries(examples, runner.names, "examples", "file")
    return [entry if isinstance(entry, tf.RaggedTensor) else np.asarray(entry) for entry in inputs]


def _read_file(tflite):
    """The bytes of `tflite` (a path, or bytes already)."""
    if isinstance(tflite, (bytes, bytearray)):
        return bytes(tflite)
    path = os.fspath(tflite)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such .tflite file: {path}")
    with open(path, "rb") as stream:
        return stream.read()
