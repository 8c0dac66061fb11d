"""python -m jaxcls.probe --workdir=W | --weights=PATH --model=NAME [--dataset=SPEC]
[--classifier=logreg] [--out_dir=D]: see jaxcls/probe/__init__.py.

Writes OUT_DIR/eval/<split>/ (metrics.json with `method`: the classifier's chosen L2 strength
and CV accuracy, and `knn_accuracy`), predictions.npz, report.html, OUT_DIR/classifier.joblib,
and the cached features OUT_DIR/features_<split>.npz.
"""

import os
import time

import numpy as np
from absl import app, flags, logging
from sklearn.neighbors import KNeighborsClassifier

from jaxcls import cli, evaluate, models, weights, writers
from jaxcls.classic import baseline
from jaxcls.probe import features


def knn_accuracy(x: np.ndarray, y: np.ndarray, t: np.ndarray, t_labels: np.ndarray,
                 k: int = 20) -> float:
    """Top-1 of a cosine k-NN (distance-weighted) on L2-normalised features."""
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # noqa: E731
    knn = KNeighborsClassifier(n_neighbors=min(k, len(y)), weights="distance")
    return float((knn.fit(unit(x), y).predict(unit(t)) == t_labels).mean())


def network(workdir: str | None, weights_path: str | None, model_name: str | None,
            dataset: str | None, image_size: int | None):
    """(title, model, variables, dataset spec, image size, mean, std, crop_frac)."""
    if bool(workdir) == bool(weights_path):
        raise ValueError("pass exactly one of --workdir (a jaxcls run) and --weights (a "
                         "pretrained checkpoint, with --model)")
    if workdir:
        run = evaluate.load_run(workdir)
        c = run.config
        return (run.step_dir, run.model, run.variables, dataset or c.dataset,
                image_size or c.image_size, c.mean, c.std, c.crop_frac)
    if not model_name:
        raise ValueError("--weights needs --model (a registered name, e.g. efficientnet_lite0)")
    if not dataset:
        raise ValueError("--weights needs --dataset (e.g. folder:PATH)")
    ckpt = weights.read(weights_path, model_name)
    size = image_size or ckpt.preprocessing.get("image_size") or \
        models.DEFAULT_IMAGE_SIZE[model_name]
    # A checkpoint without a classifier (CLIP's towers, a self-supervised encoder) gets a
    # stand-in one-class head: the probe reads the head's inputs only.
    model, variables = weights.build(ckpt, model_name, 1 if ckpt.num_classes is None else None,
                                     image_size=size)
    p = ckpt.preprocessing
    return (f"{weights_path} ({model_name})", model, variables, dataset, size, p["mean"],
            p["std"], p.get("crop_frac", 1.0))


def probe(workdir: str | None, weights_path: str | None, model_name: str | None,
          dataset: str | None, out_dir: str | None, classifier: str = "logreg",
          image_size: int | None = None, split: str = "test", cv: int = 3,
          cv_examples: int = 10000, seed: int = 0, batch_size: int = 256, k: int = 20,
          pictures: bool = True) -> dict:
    """Features of the train and `split` images, a cross-validated classifier on them, k-NN;
    the evaluate outputs under out_dir. Returns the metrics."""
    title, model, variables, spec, size, mean, std, crop = network(
        workdir, weights_path, model_name, dataset, image_size)
    out_dir = out_dir or os.path.join(workdir or os.path.join("runs", f"probe_{model_name}"),
                                      "probe")
    data = baseline.load(spec, size, seed, split, crop)
    t0 = time.monotonic()
    feats = {}
    for name, images in (("train", data.train_images), (split, data.images)):
        key = features.fingerprint(variables, images, mean, std)
        feats[name] = features.cached(
            os.path.join(out_dir, f"features_{name}.npz"), key,
            lambda images=images, name=name: features.extract(model, variables, images, mean,
                                                              std, batch_size, name))
    feature_s = time.monotonic() - t0
    pipeline, info = baseline.fit(classifier, feats["train"], data.train_labels, cv,
                                  cv_examples, seed)
    knn = knn_accuracy(feats["train"], data.train_labels, feats[split], data.labels, k)
    logging.info("k-NN (k=%d, cosine) top-1 %.4f", k, knn)
    method = {"features": f"head inputs of {title}", "image_size": size, "dataset": spec,
              "feature_seconds": round(feature_s, 1), **info, "knn_k": k,
              "knn_accuracy": knn}
    result = baseline.write(out_dir, f"probe {classifier} on {title}", method, pipeline,
                            feats[split], data, pictures)
    result["knn_accuracy"] = knn
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    writers.quiet_libraries()
    f = flags.FLAGS
    r = probe(f.workdir, f.weights, f.model, f.dataset, f.out_dir, f.classifier, f.image_size,
              f.split, f.cv, f.cv_examples, f.seed, f.batch_size, f.knn_k)
    print(f"probe {f.classifier}: {r['split']} top-1 {r['accuracy']:.4f}, k-NN "
          f"{r['knn_accuracy']:.4f} ({r['examples']} examples)")


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "a jaxcls run directory (its best checkpoint)")
    flags.DEFINE_string("weights", None, "instead: a pretrained checkpoint (needs --model)")
    flags.DEFINE_string("model", None, "--weights: the registered model name")
    flags.DEFINE_string("dataset", None, "a config.dataset spec (default: the run's)")
    flags.DEFINE_integer("image_size", None, "default: the run's / the weights' resolution")
    flags.DEFINE_enum("classifier", "logreg", ["logreg", "linear_svm", "knn"],
                      "the probe on the frozen features")
    flags.DEFINE_enum("split", "test", ["test", "val"], "the split to evaluate")
    flags.DEFINE_string("out_dir", None, "default: WORKDIR/probe or runs/probe_<model>/probe")
    flags.DEFINE_integer("cv", 3, "cross-validation folds choosing the L2 strength")
    flags.DEFINE_integer("cv_examples", 10000, "training examples the search uses")
    flags.DEFINE_integer("seed", 0, "seed of the CV sample")
    flags.DEFINE_integer("batch_size", 256, "images per feature batch (over all devices)")
    flags.DEFINE_integer("knn_k", 20, "neighbours of the k-NN accuracy")
    cli.run(main)
