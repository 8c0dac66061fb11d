"""Per-label decision thresholds of a multi-label run: for each label the score threshold with
the highest F1 on held-out data, stored beside the checkpoint it belongs to."""

import json
import os

import numpy as np

from jaxcls import metrics

FILENAME = "thresholds.json"  # in WORKDIR/checkpoints/STEP/, beside orbax's items


def _listed(values: np.ndarray) -> list:
    return [None if np.isnan(v) else round(float(v), 6) for v in values]


def save(step_dir: str, fit: tuple[np.ndarray, np.ndarray], evaluated: tuple[np.ndarray,
         np.ndarray], class_names: list[str], fitted_on: str) -> str:
    """Fits thresholds on `fit` = (scores [N, C], multi-hot labels [N, C]) of split `fitted_on`
    and writes them with, on `evaluated` (the eval split), per-label F1 at 0.5 and at the
    thresholds (in-sample, hence optimistic, when fitted on the eval split itself) and average
    precision; returns the file's path."""
    fitted = metrics.fit_thresholds(*fit)
    scores, labels = evaluated
    record = {
        "fitted_on": fitted_on,
        "fit_examples": len(fit[0]),
        "class_names": list(class_names),
        "thresholds": _listed(fitted),
        "eval": {
            "examples": len(scores),
            "in_sample": fitted_on == "eval",
            "f1_at_0.5": _listed(metrics.f1_per_label(scores, labels, 0.5)),
            "f1_at_thresholds": _listed(metrics.f1_per_label(scores, labels, fitted)),
            "average_precision": _listed(metrics.average_precision(scores, labels)),
        },
    }
    path = os.path.join(step_dir, FILENAME)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    return path
