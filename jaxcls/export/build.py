"""Building, checking and writing a run's export (jax.export; SavedModel/TFLite; ONNX).

The exported function is jaxcls.evaluate's prediction (normalisation, model, TTA views) with the
run's parameters as constants and its stored temperature applied: uint8 [batch, S, S, 3] ->
softmax(log-probabilities / T) [batch, C], with a symbolic batch. Decoding and the eval geometry
(shorter side to S / crop_frac, centre crop) stay outside, on the host, as in jaxcls.predict.
"""

import datetime
import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import jaxcls
from jaxcls import calibration, evaluate, predict
from jaxcls.data import loader, sources
from jaxcls.export import artifact

PLATFORMS = ("cpu", "cuda", "tpu")


def serving_function(run: evaluate.Run, tta_spec: str, temperature: float):
    """Jitted uint8 images [B, S, S, 3] -> calibrated probabilities float32 [B, C]."""
    log_probs = evaluate.log_probs_fn(run, tta_spec)
    variables = run.variables

    def probs(images):
        return jax.nn.softmax(log_probs(variables, images) / jnp.float32(temperature), axis=-1)

    return jax.jit(probs)


def export_function(fn, image_size: int, platforms: tuple[str, ...] = PLATFORMS
                    ) -> jax.export.Exported:
    """`fn` exported for `platforms` at uint8 [batch, S, S, 3] with a symbolic batch."""
    batch, = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.uint8)
    return jax.export.export(fn, platforms=platforms)(spec)


def metadata(run: evaluate.Run, tta_spec: str, temperature: float | None, ema: bool,
             batch_size: int) -> dict:
    """What a consumer needs besides the function: classes, input, preprocessing, source."""
    config = run.config
    return {
        "input": {"dtype": "uint8", "shape": ["batch", config.image_size, config.image_size, 3],
                  "layout": "NHWC, RGB"},
        "output": {"dtype": "float32", "shape": ["batch", len(run.class_names)],
                   "meaning": "class probabilities (temperature-scaled when calibrated)"},
        "class_names": list(run.class_names),
        "image_size": config.image_size,
        "batch_size": batch_size,
        "preprocessing": {
            "outside": (f"decode to RGB (EXIF-oriented), resize the shorter side to "
                        f"round({config.image_size} / crop_frac) (bilinear), centre crop "
                        f"{config.image_size} x {config.image_size}: "
                        "jaxcls.data.images.decode"),
            "crop_frac": config.crop_frac,
            "inside": "(x / 255 - mean) / std, then the model",
            "mean": list(config.mean), "std": list(config.std), "dtype": config.dtype},
        "temperature": temperature if temperature is not None else 1.0,
        "calibrated": temperature is not None,
        "tta": tta_spec,
        "source": {"workdir": os.path.abspath(run.workdir), "checkpoint": run.step_dir,
                   "step": int(os.path.basename(run.step_dir)), "ema": ema,
                   "model": config.model, "dataset": config.dataset},
        "jaxcls_version": jaxcls.__version__,
        "jax_version": jax.__version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def compare(reference, candidate, source, batch_size: int, num_threads: int = 1) -> dict:
    """max |Δprob| and top-1 agreement of `candidate` against `reference` (both
    uint8 [n <= batch_size, S, S, 3] -> probs [n, C]) on every example of `source`."""
    max_diff, agree, count = 0.0, 0, 0
    for batch in loader.eval_batches(source, batch_size, num_threads):
        keep = ~batch["bad"] & ~batch.get("pad", np.zeros_like(batch["bad"]))
        x = batch["image"][keep]
        if not len(x):
            continue
        a, b = np.asarray(reference(x), np.float64), np.asarray(candidate(x), np.float64)
        max_diff = max(max_diff, float(np.abs(a - b).max()))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        count += len(x)
    if not count:
        raise ValueError("no readable example to verify the export on")
    return {"examples": count, "max_abs_diff": max_diff, "top1_agreement": agree / count}


FORMATS = ("jax", "savedmodel", "onnx")


def _write_jax(fn, image_size: int, platforms: tuple[str, ...], stage: str) -> tuple[dict, dict]:
    """STAGE/model.jax; ({file: reloaded callable}, metadata fields)."""
    exported = export_function(fn, image_size, platforms)
    serialized = exported.serialize()
    with open(os.path.join(stage, artifact.MODEL_FILE), "wb") as f:
        f.write(serialized)
    reloaded = jax.jit(artifact.deserialize(stage).call)  # what a consumer gets
    return ({artifact.MODEL_FILE: lambda x: np.asarray(reloaded(x))},
            {"format": "jax.export", "file": artifact.MODEL_FILE,
             "platforms": list(exported.platforms),
             "calling_convention_version": exported.calling_convention_version})


def _write_tf(fn, image_size: int, stage: str) -> tuple[dict, dict]:
    """STAGE/savedmodel and STAGE/model.tflite; ({file: reloaded callable}, metadata fields)."""
    from jaxcls.export import tf_export

    savedmodel = tf_export.write_savedmodel(fn, image_size, stage)
    tflite = tf_export.write_tflite(stage)
    return ({tf_export.SAVEDMODEL_DIR: savedmodel, tf_export.TFLITE_FILE: tflite},
            {"format": "savedmodel", "file": tf_export.SAVEDMODEL_DIR,
             "tflite_file": tf_export.TFLITE_FILE})


def _write_onnx(fn, image_size: int, stage: str) -> tuple[dict, dict]:
    """STAGE/model.onnx; ({file: onnxruntime callable}, metadata fields)."""
    from jaxcls.export import onnx_export

    session = onnx_export.write_onnx(fn, image_size, stage)
    return {onnx_export.ONNX_FILE: session}, {"format": "onnx", "file": onnx_export.ONNX_FILE}


def export_run(workdir: str, out: str, which: str = "best", ema: bool = False,
               tta_spec: str = "", platforms: tuple[str, ...] = PLATFORMS,
               verify_examples: int = 1000, tolerance: float | None = None,
               min_top1_agreement: float = 0.999, fmt: str = "jax", quantized: str = "") -> dict:
    """Exports `workdir` at checkpoint `which` to OUT (`fmt` jax: model.jax; savedmodel:
    savedmodel/ and model.tflite; onnx: model.onnx) + OUT/metadata.json after checking every
    reloaded file against jaxcls.predict on the first `verify_examples` of the run's eval split
    (0: all of it); raises ValueError, writing nothing, when max |Δprob| exceeds `tolerance`
    (default 1e-4, and 1e-2 for a quantized model: a recompiled int8 graph may round an
    activation that sits on a quantization boundary the other way)
    or top-1 agreement falls below `min_top1_agreement`. `quantized`: export the run's int8
    model (jaxcls.quantize). Returns the metadata."""
    if tolerance is None:
        tolerance = 1e-2 if quantized else 1e-4
    if fmt not in FORMATS:
        raise ValueError(f"--format={fmt!r}: use one of {FORMATS}")
    unknown = sorted(set(platforms) - {"cpu", "cuda", "rocm", "tpu"})
    if unknown or not platforms:
        raise ValueError(f"--platforms: unknown {unknown or 'empty list'}; use cpu, cuda, rocm, "
                         "tpu")
    reference = predict.Predictor([workdir], which, tta_spec, ema, quantized)
    run, temperature = reference.runs[0], reference.temperatures[0]
    calibrated = calibration.temperature(
        run.step_dir, evaluate.calibration_key(tta_spec, quantized, ema=ema)) is not None
    fn = serving_function(run, tta_spec, temperature)
    source = sources.create(evaluate.streaming_config(run.config)).eval
    if verify_examples:
        source = sources.subset(source, np.arange(min(verify_examples, len(source))))
    key = (run.config.image_size, run.config.crop_frac)

    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".export-", dir=parent)  # moved into OUT once checked
    try:
        if fmt == "jax":
            candidates, fields = _write_jax(fn, run.config.image_size, tuple(platforms), stage)
        elif fmt == "savedmodel":
            candidates, fields = _write_tf(fn, run.config.image_size, stage)
        else:
            candidates, fields = _write_onnx(fn, run.config.image_size, stage)
        checks = {}
        for name, candidate in candidates.items():
            check = compare(lambda x: reference.probs({key: x}), candidate, source,
                            reference.batch_size, run.config.num_threads)
            check.update(split="test", platform=jax.default_backend(), tolerance=tolerance,
                         min_top1_agreement=min_top1_agreement)
            if (check["max_abs_diff"] > tolerance
                    or check["top1_agreement"] < min_top1_agreement):
                raise ValueError(
                    f"export check failed for {name} on {check['examples']} eval examples of "
                    f"{workdir}: max |Δprob| {check['max_abs_diff']:.3g} (tolerance "
                    f"{tolerance:g}), top-1 agreement {check['top1_agreement']:.4f} (minimum "
                    f"{min_top1_agreement:g}); nothing written to {out}")
            checks[name] = check
        meta = metadata(run, tta_spec, temperature if calibrated else None, ema,
                        reference.batch_size)
        meta.update(fields)
        meta["verification"] = checks[meta["file"]]
        meta["quantized"] = quantized or None  # the jaxcls.quantize scheme, if int8
        if len(checks) > 1:
            meta["verification_by_file"] = checks
        with open(os.path.join(stage, artifact.METADATA_FILE), "w") as f:
            json.dump(meta, f, indent=2)
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(stage):
            target = os.path.join(out, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            os.replace(os.path.join(stage, name), target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    logging.info("exported %s to %s (%s): %s", run.step_dir, out, fmt, "; ".join(
        f"{n}: max |Δprob| {c['max_abs_diff']:.3g}, top-1 agreement {c['top1_agreement']:.4f} "
        f"on {c['examples']} examples" for n, c in checks.items()))
    return meta
