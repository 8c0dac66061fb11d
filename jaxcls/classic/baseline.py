"""One classical baseline run, `python -m jaxcls.classic` (see its --help):

Decodes the dataset (any `config.dataset` spec: digits, folder:PATH, tfds:NAME) at
--image_size, extracts the features of every train and test image, picks the classifier's
hyperparameters by --cv-fold cross-validation on up to --cv_examples training examples, refits
the best on all of them, and evaluates the --split like `jaxcls.evaluate`: OUT_DIR/eval/<split>/
metrics.json (plus the fitted `method`: features, classifier, best parameters, CV accuracy,
seconds), predictions.npz, report.html; the fitted pipeline goes to OUT_DIR/classifier.joblib.
"""

import dataclasses
import os
import time

import joblib
import numpy as np
from absl import logging
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from jaxcls import defaults, evaluate
from jaxcls.classic import classifiers, features
from jaxcls.data import sources


def load_split(source) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, S, S, 3] and int labels [N] of a source, unreadable files dropped."""
    if isinstance(source, sources.ArraySource):
        return source.images, np.asarray(source.labels)
    examples = [source[i] for i in range(len(source))]
    keep = [ex for ex in examples if not ex["bad"]]
    return (np.stack([ex["image"] for ex in keep]), np.array([int(ex["label"]) for ex in keep]))


def dataset_config(spec: str, image_size: int, seed: int, crop_frac: float = 1.0):
    config = defaults.get_config()
    config.dataset, config.image_size, config.seed = spec, image_size, seed
    config.crop_frac = crop_frac
    return config


@dataclasses.dataclass
class Split:
    """Decoded train and held-out images of a dataset, for feature extraction."""

    train_images: np.ndarray
    train_labels: np.ndarray
    images: np.ndarray  # the evaluated split
    labels: np.ndarray
    name: str  # test | val
    skipped: int  # unreadable files of the evaluated split
    class_names: list[str]


def load(spec: str, image_size: int, seed: int, split: str = "test", crop_frac: float = 1.0
         ) -> Split:
    """The dataset `spec` decoded at `image_size` (resize, centre crop of `crop_frac`): its
    train split and `split` (test or val)."""
    if split not in ("test", "val"):
        raise ValueError(f"--split={split!r}: use test or val")
    dataset = sources.create(dataset_config(spec, image_size, seed, crop_frac))
    held = dataset.eval if split == "test" else dataset.val
    if held is None:
        raise ValueError(f"--split=val: {spec} has no val split")
    x, y = load_split(dataset.train)
    t, t_labels = load_split(held)
    return Split(x, y, t, t_labels, split, len(held) - len(t_labels), dataset.class_names)


def fit(classifier_name: str, x: np.ndarray, y: np.ndarray, cv: int = 3,
        cv_examples: int = 10000, seed: int = 0, n_jobs: int | None = None,
        exact_svm_max: int = 10000, nystroem_components: int = 2000) -> tuple[object, dict]:
    """(pipeline, info): the classifier's hyperparameters chosen by `cv`-fold cross-validation
    on a seeded sample of `cv_examples` rows, the best then refitted on all of x."""
    pipeline, grid = classifiers.build(classifier_name, len(y), seed, exact_svm_max,
                                       nystroem_components)
    pick = np.sort(np.random.default_rng(seed).permutation(len(y))[:cv_examples])
    search = GridSearchCV(pipeline, grid, refit=False, n_jobs=n_jobs,
                          cv=StratifiedKFold(cv, shuffle=True, random_state=seed))
    t0 = time.monotonic()
    logging.info("%s: %d-fold CV over %s on %d of %d training examples", classifier_name, cv,
                 grid, len(pick), len(y))
    search.fit(x[pick], y[pick])
    cv_s = time.monotonic() - t0
    logging.info("best %s (CV accuracy %.4f); refitting on all %d", search.best_params_,
                 search.best_score_, len(y))
    t0 = time.monotonic()
    pipeline.set_params(**search.best_params_).fit(x, y)
    return pipeline, {"classifier": classifier_name, "feature_dims": int(x.shape[1]),
                      "best_params": search.best_params_, "cv_accuracy": search.best_score_,
                      "cv_examples": int(len(pick)), "train_examples": int(len(y)),
                      "cv_seconds": round(cv_s, 1),
                      "fit_seconds": round(time.monotonic() - t0, 1)}


def write(out_dir: str, title: str, method: dict, pipeline, features_: np.ndarray,
          data: Split, pictures: bool = True) -> dict:
    """Evaluates a fitted pipeline on the held-out features like `jaxcls.evaluate`: writes
    OUT_DIR/eval/<split>/ and OUT_DIR/classifier.joblib; returns the metrics."""
    log_probs = classifiers.log_probs(pipeline, features_, len(data.class_names))
    record, calibrated = evaluate.self_calibration(
        data.labels, log_probs, data.name, "the classifier was fitted on all of train")
    os.makedirs(out_dir, exist_ok=True)
    joblib.dump(pipeline, os.path.join(out_dir, "classifier.joblib"))
    head = {"checkpoints": [title], "split": data.name, "tta": "", "skipped": data.skipped,
            "method": method}
    return evaluate.write_outputs(os.path.join(out_dir, "eval", data.name), head, data.labels,
                                  np.exp(log_probs), np.exp(calibrated), record,
                                  data.class_names, lambda i: data.images[i],
                                  pictures=pictures)


def run(spec: str, feature_name: str, classifier_name: str, out_dir: str, image_size: int = 32,
        split: str = "test", params: features.FeatureParams | None = None,
        cv: int = 3, cv_examples: int = 10000, seed: int = 0, n_jobs: int | None = None,
        exact_svm_max: int = 10000, nystroem_components: int = 2000,
        pictures: bool = True) -> dict:
    """Fits and evaluates one feature + classifier pair; returns the evaluation's metrics."""
    features.check_name(feature_name)
    classifiers.check_name(classifier_name)
    params = params or features.FeatureParams()
    data = load(spec, image_size, seed, split)
    t0 = time.monotonic()
    x = features.extract(feature_name, data.train_images, params, n_jobs, label="train")
    t = features.extract(feature_name, data.images, params, n_jobs, label=split)
    feature_s = time.monotonic() - t0
    pipeline, info = fit(classifier_name, x, data.train_labels, cv, cv_examples, seed, n_jobs,
                         exact_svm_max, nystroem_components)
    method = {"features": feature_name, "feature_params": dataclasses.asdict(params),
              "image_size": image_size, "feature_seconds": round(feature_s, 1), **info}
    return write(out_dir, f"classic {feature_name} + {classifier_name} on {spec}", method,
                 pipeline, t, data, pictures)
