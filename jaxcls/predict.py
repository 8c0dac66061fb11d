"""Top-k labels with confidence for image files, with a run's own eval preprocessing.

    python -m jaxcls.predict --workdir=W IMAGE_OR_DIR ... [--top_k=5] [--json] [--tta=flip]
    python -m jaxcls.predict --exported=DIR IMAGE_OR_DIR ...   (a jaxcls.export artifact)

Folders are walked recursively (hidden entries skipped, symlinks followed); files are decoded
in parallel and predicted in batches over all devices. A file that is not a readable image is
reported on stderr and skipped (exit code 0 when at least one image was predicted).
Probabilities use the temperature stored by `jaxcls.evaluate` for the checkpoint (and TTA
spec) when there is one. Several --workdir: the mean of the runs' (calibrated) probabilities.
--mc_dropout=N: the mean of N dropout samples, and each image's predictive entropy and mutual
information (jaxcls.mc_dropout).
"""

import json
import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
from absl import app, flags

from jaxcls import calibration, cli, evaluate, sharding, writers
from jaxcls import mc_dropout as mc_dropout_lib
from jaxcls.data import folders, images


def expand(paths: Iterable[str]) -> Iterator[str]:
    """Files as given, and every non-hidden file under given folders (sorted, through
    symlinks: `folders.walk_files`); files that are not images are reported, not dropped."""
    for p in paths:
        if os.path.isdir(p):
            yield from folders.walk_files(p)
        else:
            yield p


def load_or_error(path: str, size: int, crop_frac: float
                  ) -> tuple[np.ndarray | None, str | None]:
    """(the decoded image, None), or (None, why) for a file that is not a readable image."""
    try:
        return images.load_image(path, size, crop_frac), None
    except Exception as e:  # PIL raises many types on non-image input; each means "skip it"
        return None, f"{type(e).__name__}: {e}"


def _progress(done: int, total: int, skipped: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} files, "
                     f"{skipped} skipped")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


class Predictor:
    """Probabilities of one run (or the mean over several) for uint8 images of each run's size."""

    def __init__(self, workdirs: list[str], which: str = "best", tta_spec: str = "",
                 ema: bool = False, quantized: str = "", mc_dropout: int = 0):
        self.runs = [evaluate.load_run(w, which, ema, quantized, mc_dropout) for w in workdirs]
        evaluate.check_same_classes(self.runs)
        self.class_names = self.runs[0].class_names
        self.batch_size = max(evaluate.global_batch_size(r.config) for r in self.runs)
        mesh = sharding.make_mesh()
        self.fns = [r.predict_fn(tta_spec) for r in self.runs]
        self.variables = [jax.device_put(r.variables, sharding.replicated(mesh))
                          for r in self.runs]
        key = evaluate.calibration_key(tta_spec, quantized, mc_dropout, ema)
        self.temperatures = [calibration.temperature_or_one(r.step_dir, key)
                             for r in self.runs]

    def preprocessings(self) -> set[tuple[int, float]]:
        """The distinct (image_size, crop_frac) the runs read images at."""
        return {(r.config.image_size, r.config.crop_frac) for r in self.runs}

    def probs(self, decoded: dict[tuple[int, float], np.ndarray]) -> np.ndarray:
        """[N, C] from {(size, crop_frac): uint8 [N, size, size, 3]}."""
        return self.outputs(decoded)[0]

    def outputs(self, decoded: dict[tuple[int, float], np.ndarray]
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(calibrated probs [N, C], with mc_dropout {"predictive_entropy",
        "mutual_information"} [N] of the uncalibrated sample mean, as jaxcls.evaluate reports
        them, else {}) from {(size, crop_frac): uint8 [N, size, size, 3]}."""
        log_probs, raw, expected_entropy = [], [], []
        for run, fn, variables, t in zip(self.runs, self.fns, self.variables,
                                         self.temperatures, strict=True):
            x = decoded[(run.config.image_size, run.config.crop_frac)]
            n = len(x)
            # Padded to the full batch: one compilation, and a multiple of the device count.
            padded = np.concatenate([x, np.zeros((self.batch_size - n, *x.shape[1:]),
                                                 x.dtype)])
            out = jax.device_get(fn(variables, padded))
            if isinstance(out, dict):
                expected_entropy.append(np.asarray(out["expected_entropy"])[:n])
                out = out["log_probs"]
            raw.append(np.asarray(out)[:n])
            log_probs.append(calibration.scaled_log_probs(raw[-1], t))
        probs = np.exp(evaluate.ensemble(log_probs))
        if not expected_entropy:
            return probs, {}
        return probs, mc_dropout_lib.uncertainty(evaluate.ensemble(raw),
                                                 np.mean(expected_entropy, axis=0))


def predict(workdirs: list[str] | None, paths: Iterable[str], top_k: int = 5,
            which: str = "best", tta_spec: str = "", ema: bool = False, threads: int = 8,
            progress: bool = True, exported: str | None = None, quantized: str = "",
            mc_dropout: int = 0) -> Iterator[dict]:
    """Yields {"path", "top_k": [(label, probability), ...]} per readable image (with
    `mc_dropout` samples also "predictive_entropy" and "mutual_information"), or
    {"path", "error"} for a file that is not one. `exported`: a jaxcls.export directory to
    predict with instead of `workdirs` (its TTA and temperature are inside); `quantized`: the
    runs' int8 models (jaxcls.quantize)."""
    if exported:
        if mc_dropout:
            raise ValueError("--mc_dropout needs --workdir: an exported model has no dropout")
        from jaxcls.export import artifact

        predictor = artifact.Artifact(exported)
    else:
        predictor = Predictor(workdirs, which, tta_spec, ema, quantized, mc_dropout)
    files = list(expand(paths))
    k = min(top_k, len(predictor.class_names))
    done = skipped = 0
    with ThreadPoolExecutor(threads) as pool:  # PIL releases the GIL while decoding
        for start in range(0, len(files), predictor.batch_size):
            chunk = files[start:start + predictor.batch_size]
            decoded, ok = {}, None
            for size, crop_frac in predictor.preprocessings():
                loaded = list(pool.map(
                    lambda p, s=size, c=crop_frac: load_or_error(p, s, c), chunk))
                ok = [i for i, (x, _) in enumerate(loaded) if x is not None]
                errors = {i: e for i, (_, e) in enumerate(loaded) if e is not None}
                decoded[(size, crop_frac)] = np.stack([loaded[i][0] for i in ok]) if ok else None
            for i, error in sorted(errors.items()):
                skipped += 1
                yield {"path": chunk[i], "error": error}
            if ok:
                probs, extra = (predictor.outputs(decoded) if mc_dropout
                                else (predictor.probs(decoded), {}))
                for row, (i, p) in enumerate(zip(ok, probs, strict=True)):
                    top = np.argsort(-p, kind="stable")[:k]
                    yield {"path": chunk[i],
                           "top_k": [(predictor.class_names[j], float(p[j])) for j in top],
                           **{name: float(v[row]) for name, v in extra.items()}}
            done += len(chunk)
            if progress:
                _progress(done, len(files), skipped)


_UNCERTAINTY = ("predictive_entropy", "mutual_information")


def main(argv):
    writers.quiet_libraries()
    f = flags.FLAGS
    if len(argv) < 2:
        raise app.UsageError("give image files or folders to predict")
    if bool(f.workdir) == bool(f.exported):
        raise app.UsageError("give --workdir (one or more runs) or --exported=DIR, not both")
    predicted = 0
    bar = sys.stderr.isatty()  # a progress bar on a terminal, nothing in logs
    for r in predict(f.workdir, argv[1:], f.top_k, f.checkpoint, f.tta, f.ema, progress=bar,
                     exported=f.exported, quantized=f.quantized, mc_dropout=f.mc_dropout):
        if "error" in r:
            print(("\r\033[K" if bar else "")  # clears the bar's line first
                  + f"skipping {r['path']}: not a readable image ({r['error']})",
                  file=sys.stderr)
        elif f.json:
            print(json.dumps({"path": r["path"], "top_k": [{"label": n, "probability": p}
                                                          for n, p in r["top_k"]],
                              **{k: r[k] for k in _UNCERTAINTY if k in r}}))
        else:
            print(f"{r['path']}: " + ", ".join(f"{n} {p:.3f}" for n, p in r["top_k"])
                  + "".join(f", {k.replace('_', ' ')} {r[k]:.3f}" for k in _UNCERTAINTY
                            if k in r))
        predicted += "error" not in r
    return 0 if predicted else 1


if __name__ == "__main__":
    evaluate.define_run_flags(required=False, quantized=True)
    flags.DEFINE_string("exported", None, "a directory written by jaxcls.export, instead of "
                        "--workdir")
    flags.DEFINE_integer("top_k", 5, "labels printed per image")
    flags.DEFINE_bool("json", False, "one JSON object per line")
    flags.DEFINE_integer("mc_dropout", 0, "the mean of this many dropout samples, with each "
                         "image's predictive entropy and mutual information (0: off)")
    cli.run(main)
