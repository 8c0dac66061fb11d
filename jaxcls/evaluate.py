"""Offline evaluation of finished runs: metrics, predictions, calibration, pictures, report.

    python -m jaxcls.evaluate --workdir=W [--split=test] [--checkpoint=best|last|STEP]
        [--tta=flip|crops5] [--workdir=W2 ...]

writes W/eval/<split>/ (suffixed _tta_<spec>, e.g. _tta_flip+crops5, and _ensemble when used):
metrics.json, predictions.npz (`labels` [N], `probs` [N, C], `class_names`, `temperature`, and
`paths` for folder datasets), the PNGs and report.html. Several --workdir average their
probabilities (an ensemble).
"""

import dataclasses
import json
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from jax.experimental import multihost_utils

from jaxcls import calibration, checkpoint, cli, defaults, metrics, report, sharding, train, writers
from jaxcls import mc_dropout as mc_dropout_lib
from jaxcls.data import augment, loader, sources, tta

# ---- a trained run ---------------------------------------------------------------------------


def load_config(workdir: str, any_task: bool = False) -> ml_collections.ConfigDict:
    """The resolved config the run in `workdir` trained with (WORKDIR/config.json); unless
    `any_task`, only a multiclass run's."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: is {workdir!r} a jaxcls run directory?")
    with open(path) as f:
        # Keys added to jaxcls after the run trained take their defaults.
        config = ml_collections.ConfigDict({**defaults.get_config().to_dict(), **json.load(f)})
    if not any_task and config.get("task", "multiclass") != "multiclass":
        raise ValueError(f"{path}: task={config.task!r}; evaluate and predict handle multiclass "
                         "runs")
    return config


def resolve_checkpoint(workdir: str, which: str = "best") -> str:
    """WORKDIR/checkpoints/STEP for `which`: best (summary.json's best step, else the best eval
    in metrics.jsonl by the run's monitored metric, train.best_metric), last, or a step
    number."""
    directory = os.path.join(workdir, "checkpoints")
    saved = sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(
        directory) else []
    if not saved:
        raise FileNotFoundError(f"no checkpoints under {directory}")
    if which == "last":
        step = saved[-1]
    elif which == "best":
        summary_path = os.path.join(workdir, "summary.json")
        step = None
        if os.path.exists(summary_path):
            with open(summary_path) as f:
                step = json.load(f).get("best_step")
        if step is None:
            step = train.best_eval(train.eval_rows(os.path.join(workdir, "metrics.jsonl")),
                                   train.best_metric(load_config(workdir, any_task=True)))[1]
        if step is None:
            raise ValueError(f"{workdir} has no evaluated checkpoint: pass --checkpoint=last or "
                             f"a step of {saved}")
    elif which.isdigit():
        step = int(which)
    else:
        raise ValueError(f"--checkpoint={which!r}: use best, last or a step number")
    if step not in saved:
        raise FileNotFoundError(f"checkpoint step {step} ({which}) is not in {directory}; "
                                f"saved steps: {saved}")
    return os.path.join(directory, str(step))


@dataclasses.dataclass
class Run:
    workdir: str
    config: ml_collections.ConfigDict
    class_names: list[str]
    step_dir: str
    model: object
    variables: dict  # params and batch_stats, on this process's first device
    mc_dropout: int = 0  # predictions as the mean of this many dropout samples (0: off)
    _predict_fns: dict = dataclasses.field(default_factory=dict)

    def predict_fn(self, tta_spec: str = ""):
        """make_predict_fn(self, tta_spec), compiled once per shape for this run."""
        if tta_spec not in self._predict_fns:
            self._predict_fns[tta_spec] = make_predict_fn(self, tta_spec)
        return self._predict_fns[tta_spec]


def class_names(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
    """WORKDIR/class_names.json, written by training; older runs: listed from the dataset."""
    path = os.path.join(workdir, "class_names.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return sources.create(streaming_config(config)).class_names


def load_run(workdir: str, which: str = "best", ema: bool = False, quantized: str = "",
             mc_dropout: int = 0) -> Run:
    """The model and parameters of `workdir` at checkpoint `which` (see resolve_checkpoint);
    `ema`: its moving average of the parameters instead; `quantized`: the int8 model that
    `python -m jaxcls.quantize --scheme=<quantized>` wrote for the run; `mc_dropout`: predict
    with that many dropout samples (jaxcls.mc_dropout)."""
    config = load_config(workdir)
    names = class_names(workdir, config)
    step_dir = resolve_checkpoint(workdir, which)
    state = checkpoint.load_state(step_dir)
    params = state.get("ema_params") if ema else state["params"]
    if params is None:
        raise ValueError(f"{step_dir} holds no EMA parameters (config.ema_decay was 0)")
    variables = {"params": params, "batch_stats": state.get("batch_stats") or {}}
    logging.info("%s: %s", workdir, step_dir)
    model = train.create_model(config, len(names))
    if quantized:
        from jaxcls.quantize import schemes

        schemes.check_scheme(quantized)
        model, variables, meta = schemes.load(schemes.directory(workdir, quantized), model,
                                              variables)
        logging.info("%s: %s int8 model quantized from %s", workdir, quantized, meta["source"])
    if mc_dropout:
        mc_dropout_lib.check_samples(mc_dropout, mc_dropout_lib.dropout_rates(
            model, variables, config.image_size), workdir)
    return Run(workdir, config, names, step_dir, model, variables, mc_dropout)


def streaming_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` reading files as needed rather than decoding all of them first. Runs with a
    val_fraction keep their caching: caching drops unreadable files before the split, and the
    val split must be the one training held out."""
    config = config.copy_and_resolve_references()
    if not config.get("val_fraction"):
        config.cache_max_gib = 0.0
    return config


# ---- predictions -----------------------------------------------------------------------------


def log_probs_fn(run: Run, tta_spec: str = ""):
    """The pure (variables, uint8 images [B, S, S, 3]) -> log-probabilities [B, C], the TTA
    views' probabilities averaged with their weights (`tta.view_weights`): normalisation and
    the model (not jitted; jaxcls.export serialises it)."""
    config = run.config
    tta.parse(tta_spec, config.crop_frac)  # a bad spec fails here, before any work

    def predict(variables, images, rngs=None):
        views = tta.tta_views(images, tta_spec, config.crop_frac)
        v, n = views.shape[:2]
        views = views.swapaxes(0, 1).reshape(n * v, *views.shape[2:])  # each device: its rows
        x = augment.normalize(views, config.mean, config.std, jnp.dtype(config.dtype))
        logits = run.model.apply(variables, x, train=False, rngs=rngs).astype(jnp.float32)
        log_probs = jax.nn.log_softmax(logits).reshape(n, v, -1)
        log_weights = jnp.log(tta.view_weights(tta_spec, config.crop_frac))[None, :, None]
        return jax.nn.logsumexp(log_probs + log_weights, axis=1)  # log of the mean probability

    return predict


def make_predict_fn(run: Run, tta_spec: str = "", mesh=None):
    """Jitted log_probs_fn(run, tta_spec) (with run.mc_dropout, the dict of
    mc_dropout.sampled_log_probs); the batch is split over all devices."""
    predict = log_probs_fn(run, tta_spec)
    if run.mc_dropout:
        predict = mc_dropout_lib.sampled_log_probs(predict, run.mc_dropout)
    mesh = mesh or sharding.make_mesh()
    return jax.jit(predict, in_shardings=(sharding.replicated(mesh),
                                          sharding.batch_sharding(mesh)),
                   out_shardings=sharding.batch_sharding(mesh))


def global_batch_size(config: ml_collections.ConfigDict) -> int:
    """The run's batch size rounded down to a multiple of this machine's device count."""
    return max(config.batch_size // jax.device_count(), 1) * jax.device_count()


def predict_source(run: Run, source, tta_spec: str = "") -> dict[str, np.ndarray]:
    """{"log_probs" [N, C], "labels" [N], "index" [N]} (and "expected_entropy" [N] with
    run.mc_dropout) for every readable example of `source` in source order, from all
    processes' shards (eval padding and unreadable files dropped)."""
    mesh = sharding.make_mesh()
    batch_sharding = sharding.batch_sharding(mesh)
    predict = run.predict_fn(tta_spec)
    variables = jax.device_put(run.variables, sharding.replicated(mesh))
    batch_size = global_batch_size(run.config)
    num_batches = -(-len(source) // batch_size)
    parts, last_log = [], time.monotonic()
    for i, batch in enumerate(loader.eval_batches(source, batch_size, run.config.num_threads)):
        arrays = loader.to_global(batch, batch_sharding)
        arrays["index"] = jax.make_array_from_process_local_data(batch_sharding, batch["index"])
        out = predict(variables, arrays.pop("image"))
        arrays.update(out if isinstance(out, dict) else {"log_probs": out})
        parts.append(multihost_utils.process_allgather(arrays, tiled=True))
        if i + 1 == num_batches or time.monotonic() - last_log >= sources.PROGRESS_EVERY_S:
            logging.info("predicted %d/%d batches", i + 1, num_batches)
            last_log = time.monotonic()
    out = in_source_order(parts)
    out["labels"] = out.pop("label")
    return out


def in_source_order(parts: list[dict]) -> dict[str, np.ndarray]:
    """Gathered batches (each with "mask" and "index") joined, padding dropped, sorted by
    index: one row per real example in source order."""
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = out.pop("mask") > 0
    order = np.argsort(out["index"][keep], kind="stable")
    return {k: v[keep][order] for k, v in out.items()}


def ensemble(log_probs: list[np.ndarray]) -> np.ndarray:
    """log of the mean of the runs' probabilities."""
    stacked = np.stack(log_probs).astype(np.float64)
    return np.logaddexp.reduce(stacked, axis=0) - np.log(len(log_probs))


def check_same_classes(runs: list[Run]) -> None:
    for r in runs[1:]:
        if r.class_names != runs[0].class_names:
            raise ValueError(f"an ensemble needs the same classes in the same order: "
                             f"{runs[0].workdir} has {runs[0].class_names}, {r.workdir} has "
                             f"{r.class_names}")


# ---- evaluation ------------------------------------------------------------------------------


def _split_source(dataset: sources.Dataset, split: str, workdir: str):
    source = {"test": dataset.eval, "val": dataset.val, "train": dataset.train}[split]
    if source is None:
        raise ValueError(f"{workdir} has no val split: it trained with config.val_fraction=0 "
                         f"and its folder has no val/ folder")
    return source


def check_same_examples(runs: list[Run], datasets: list[sources.Dataset], split: str) -> None:
    """Before any prediction: an ensemble's runs must read the same `split` (as many examples,
    the same labels and, for files, the same file names); raises ValueError naming both runs."""
    first = _split_source(datasets[0], split, runs[0].workdir)
    for run, dataset in zip(runs[1:], datasets[1:], strict=True):
        source = _split_source(dataset, split, run.workdir)
        differs = None
        if len(source) != len(first):
            differs = f"{len(first)} and {len(source)} examples"
        elif hasattr(source, "labels") and hasattr(first, "labels") and not np.array_equal(
                source.labels, first.labels):
            differs = "different labels"
        elif hasattr(source, "paths") and hasattr(first, "paths") and [
                os.path.basename(p) for p in source.paths] != [
                os.path.basename(p) for p in first.paths]:
            differs = "different files"
        if differs:
            raise ValueError(f"{runs[0].workdir} ({runs[0].config.dataset}) and {run.workdir} "
                             f"({run.config.dataset}) do not have the same {split} examples "
                             f"({differs}): an ensemble must evaluate one dataset")


def _predict_split(runs: list[Run], datasets: list[sources.Dataset], split: str,
                   tta_spec: str):
    """(log-probs averaged over runs, labels, index, source of the first run, the runs' mean
    expected entropy over dropout samples or None)."""
    results, first = [], None
    for run, dataset in zip(runs, datasets, strict=True):
        source = _split_source(dataset, split, run.workdir)
        first = first or source
        results.append(predict_source(run, source, tta_spec))
        if not np.array_equal(results[-1]["index"], results[0]["index"]) or not np.array_equal(
                results[-1]["labels"], results[0]["labels"]):
            raise ValueError(f"{run.workdir} and {runs[0].workdir} do not have the same "
                             f"{split} examples: an ensemble must evaluate one dataset")
    expected_entropy = (np.mean([r["expected_entropy"] for r in results], axis=0)
                        if "expected_entropy" in results[0] else None)
    return (ensemble([r["log_probs"] for r in results]), results[0]["labels"],
            results[0]["index"], first, expected_entropy)


def calibrate(runs: list[Run], datasets: list[sources.Dataset], split: str, tta_spec: str,
              labels: np.ndarray, log_probs: np.ndarray) -> tuple[dict, np.ndarray]:
    """Temperature scaling: fitted on the runs' val split when they have one, otherwise on
    `split` itself by 2-fold cross-fitting (reported figures are out-of-fold). Returns the
    record (stored beside the checkpoint of a single run) and calibrated log-probabilities."""
    if split != "val" and all(d.val is not None for d in datasets):
        val_log_probs, val_labels, *_ = _predict_split(runs, datasets, "val", tta_spec)
        t = calibration.fit_temperature(val_log_probs, val_labels)
        calibrated = calibration.scaled_log_probs(log_probs, t)
        record = {"temperature": t, "fitted_on": "val", "fit_examples": len(val_labels),
                  "leakage": None}
    else:
        record, calibrated = self_calibration(labels, log_probs, split)
    record["tta"] = tta_spec
    return record, calibrated


def self_calibration(labels: np.ndarray, log_probs: np.ndarray, split: str,
                     why: str = "the run has no validation split (it trained on all of "
                     "train, config.val_fraction=0)") -> tuple[dict, np.ndarray]:
    """Temperature scaling fitted on `split` itself, when there is no validation split (`why`
    says so in the record): the reported figures are out-of-fold (2-fold cross-fitting)."""
    t = calibration.fit_temperature(log_probs, labels)
    calibrated = calibration.cross_fitted(log_probs, labels)
    record = {"temperature": t, "fitted_on": f"{split} (2-fold cross-fitting)",
              "fit_examples": len(labels),
              "leakage": (f"{why}: the temperature was fitted on the {split} split itself. The "
                          f"'after' figures here are out-of-fold (each half scaled by a "
                          f"temperature fitted on the other), but the stored temperature saw "
                          f"every {split} label; hold out a validation split for a clean "
                          f"fit.")}
    return record, calibrated


def most_confused(cm: np.ndarray, class_names: list[str], n: int = 10) -> list[dict]:
    off = np.array(cm, copy=True)
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:n]
    return [{"true": class_names[i], "predicted": class_names[j], "count": int(off[i, j]),
             "true_index": int(i), "predicted_index": int(j)}
            for i, j in zip(*np.unravel_index(flat, off.shape), strict=True)
            if off[i, j] > 0]


def output_dir(workdirs: list[str], split: str, tta_spec: str, quantized: str = "",
               mc_dropout: int = 0, ema: bool = False) -> str:
    """WORKDIR/eval/<split>[_ema][_tta_<spec>][_<quantized>][_mc<N>][_ensemble], e.g.
    eval/test_tta_flip+crops5, eval/test_w8a8, eval/test_mc20, eval/test_ema."""
    spec = tta.folder_name(tta_spec)
    name = split + ("_ema" if ema else "") + (f"_tta_{spec}" if spec else "") + \
        (f"_{quantized}" if quantized else "") + \
        (f"_mc{mc_dropout}" if mc_dropout else "") + ("_ensemble" if len(workdirs) > 1 else "")
    return os.path.join(workdirs[0], "eval", name)


def calibration_key(tta_spec: str, quantized: str = "", mc_dropout: int = 0,
                    ema: bool = False) -> str:
    """The key of a temperature in a checkpoint's calibration.json: one per TTA spec, per
    quantized model, per MC-dropout sample count and for the EMA parameters, so no variant's
    evaluation overwrites the plain one's."""
    return tta_spec + (f"@{quantized}" if quantized else "") + \
        (f"~mc{mc_dropout}" if mc_dropout else "") + ("+ema" if ema else "")


def evaluate(workdirs: list[str], split: str = "test", which: str = "best", tta_spec: str = "",
             ema: bool = False, out_dir: str | None = None, pictures: bool = True,
             quantized: str = "", mc_dropout: int = 0) -> dict:
    """Evaluates one run (or the ensemble of several) on `split`; writes metrics.json,
    predictions.npz and, with `pictures`, the PNGs and report.html to `out_dir`; returns the
    metrics. `mc_dropout`: predictions as the mean of that many dropout samples, with their
    uncertainty and the deterministic model's figures beside them (jaxcls.mc_dropout)."""
    if split not in ("test", "val", "train"):
        raise ValueError(f"--split={split!r}: use test, val or train")
    runs = [load_run(w, which, ema, quantized, mc_dropout) for w in workdirs]
    check_same_classes(runs)
    for run in runs:  # a bad TTA spec fails before any data is read
        tta.parse(tta_spec, run.config.crop_frac)
    names = runs[0].class_names
    datasets = [sources.create(streaming_config(r.config)) for r in runs]
    check_same_examples(runs, datasets, split)
    log_probs, labels, index, source, expected_entropy = _predict_split(runs, datasets, split,
                                                                        tta_spec)
    probs = np.exp(log_probs)
    result = {"workdirs": [os.path.abspath(w) for w in workdirs],
              "checkpoints": [r.step_dir for r in runs], "split": split, "tta": tta_spec,
              "ema": ema, "quantized": quantized, "mc_dropout": mc_dropout,
              "skipped": len(source) - len(labels)}
    arrays = {}
    if mc_dropout:
        result["mc_dropout_summary"] = mc_dropout_lib.summary(labels, log_probs,
                                                              expected_entropy, mc_dropout)
        result["mc_dropout_summary"]["deterministic"] = _deterministic_figures(
            runs, datasets, split, tta_spec)
        arrays = mc_dropout_lib.uncertainty(log_probs, expected_entropy)
    record, calibrated_log_probs = calibrate(runs, datasets, split, tta_spec, labels,
                                             log_probs)
    record["stored_in"] = None
    if len(runs) == 1 and jax.process_index() == 0:
        calibration.save(runs[0].step_dir, calibration_key(tta_spec, quantized, mc_dropout, ema),
                         {k: v for k, v in record.items() if k != "stored_in"})
        record["stored_in"] = os.path.join(runs[0].step_dir, calibration.FILENAME)
    paths = (np.array([source.name(int(i)) for i in index])
             if runs[0].config.dataset.startswith("folder:") else None)
    out_dir = out_dir or output_dir(workdirs, split, tta_spec, quantized, mc_dropout, ema)
    return write_outputs(out_dir, result, labels, probs, np.exp(calibrated_log_probs), record,
                         names, lambda i: source[int(index[i])]["image"], paths, pictures,
                         arrays)


def _deterministic_figures(runs: list[Run], datasets: list[sources.Dataset], split: str,
                           tta_spec: str) -> dict:
    """Accuracy, ECE and log loss of the same runs with dropout off, before calibration: what
    MC dropout is compared with."""
    plain = [dataclasses.replace(r, mc_dropout=0, _predict_fns={}) for r in runs]
    log_probs, labels, *_ = _predict_split(plain, datasets, split, tta_spec)
    probs = np.exp(log_probs)
    return {"accuracy": float(np.mean(np.argmax(probs, axis=-1) == labels)),
            "ece_15": metrics.expected_calibration_error(labels, probs),
            "log_loss": metrics.log_loss(labels, probs)}


def write_outputs(out_dir: str, head: dict, labels: np.ndarray, probs: np.ndarray,
                  calibrated: np.ndarray, calibration_record: dict, names: list[str],
                  image: Callable[[int], np.ndarray], paths: np.ndarray | None = None,
                  pictures: bool = True, arrays: dict | None = None) -> dict:
    """The outputs of one evaluation, whatever made the probabilities (a run, an ensemble, a
    classical or probe classifier): `head` (what was evaluated) plus every offline metric and
    the calibration before/after, as metrics.json; predictions.npz; with `pictures`, the PNGs
    and report.html (`image(i)` is example i's uint8 picture); `arrays`: more per-example
    arrays for predictions.npz. Returns the metrics."""
    result = dict(head)
    result.update(metrics.offline(labels, probs, names))
    record = dict(calibration_record)
    for key, fn in (("ece_15", lambda p: metrics.expected_calibration_error(labels, p)),
                    ("ece_adaptive_15", lambda p: metrics.expected_calibration_error(
                        labels, p, adaptive=True)),
                    ("log_loss", lambda p: metrics.log_loss(labels, p))):
        record[f"{key}_before"], record[f"{key}_after"] = result[key], fn(calibrated)
    result["calibration"] = record
    result["most_confused"] = most_confused(np.array(result["confusion_matrix"]), names)
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump(result, f, indent=2)
        saved = {"labels": labels.astype(np.int64), "probs": probs.astype(np.float32),
                 "class_names": np.array(names), "temperature": np.float64(
                     record["temperature"]), **(arrays or {})}
        if paths is not None:
            saved["paths"] = paths
        np.savez_compressed(os.path.join(out_dir, "predictions.npz"), **saved)
        if pictures:
            report.write(out_dir, result, labels, probs, calibrated, names, image)
    logging.info("%s: top-1 %.4f, ECE %.4f -> %.4f at T=%.3f; wrote %s", result["split"],
                 result["accuracy"], record["ece_15_before"], record["ece_15_after"],
                 record["temperature"], out_dir)
    return result


def define_run_flags(ensemble: bool = True, tta: bool = True, required: bool = True,
                     quantized: bool = False) -> None:
    """The flags evaluate, predict and explain share (defined at start, as each module's main
    runs): --workdir (repeatable with `ensemble`; `required` unless the command has another
    source), --checkpoint, --ema, with `tta` --tta, and with `quantized` --quantized."""
    if ensemble:
        flags.DEFINE_multi_string("workdir", None, "Run directory; repeat for an ensemble (the "
                                  "mean of the runs' probabilities).")
    else:
        flags.DEFINE_string("workdir", None, "Run directory (its config.json and checkpoints).")
    flags.DEFINE_string("checkpoint", "best", "best | last | a step number")
    if tta:
        flags.DEFINE_string("tta", "", "test-time augmentation: flip, crops5, crops5(R), joined "
                            "by | ('': none)")
    flags.DEFINE_bool("ema", False, "use the moving average of the parameters")
    if quantized:
        flags.DEFINE_string("quantized", "", "use the run's int8 model written by python -m "
                            "jaxcls.quantize: w8 | w8a8 | w8a8_static ('': float)")
    if required:
        flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    writers.quiet_libraries()
    f = flags.FLAGS
    evaluate(f.workdir, f.split, f.checkpoint, f.tta, f.ema, f.out_dir,
             quantized=f.quantized, mc_dropout=f.mc_dropout)


if __name__ == "__main__":
    define_run_flags(quantized=True)
    flags.DEFINE_enum("split", "test", ["test", "val", "train"], "test: the run's eval split; "
                      "val: its config.val_fraction hold-out or val/ folder; train.")
    flags.DEFINE_string("out_dir", None, "default: WORKDIR/eval/<split>[_ema][_tta_<spec>]"
                       "[_<quantized>][_mc<N>][_ensemble]")
    flags.DEFINE_integer("mc_dropout", 0, "predict with this many dropout samples and report "
                         "their uncertainty (0: off; the model needs a dropout rate > 0)")
    cli.run(main)
