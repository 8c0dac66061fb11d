"""Per-label decision thresholds of a multi-label run: for each label the score threshold with
the highest F1 on the eval split, stored beside the checkpoint it belongs to."""

import json
import os

import numpy as np

from jaxcls import metrics

FILENAME = "thresholds.json"  # in WORKDIR/checkpoints/STEP/, beside orbax's items


def save(step_dir: str, scores: np.ndarray, labels: np.ndarray, class_names: list[str]) -> str:
    """Fits thresholds on (scores [N, C], multi-hot labels [N, C]) and writes them with the
    per-label F1 at 0.5 and at the thresholds (the latter in-sample, hence optimistic) and
    average precision; returns the file's path."""
    fitted = metrics.fit_thresholds(scores, labels)

    def listed(values: np.ndarray) -> list:
        return [None if np.isnan(v) else round(float(v), 6) for v in values]

    record = {
        "fitted_on": "eval split",
        "examples": len(scores),
        "class_names": list(class_names),
        "thresholds": listed(fitted),
        "f1_at_0.5": listed(metrics.f1_per_label(scores, labels, 0.5)),
        "f1_at_thresholds_in_sample": listed(metrics.f1_per_label(scores, labels, fitted)),
        "average_precision": listed(metrics.average_precision(scores, labels)),
    }
    path = os.path.join(step_dir, FILENAME)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    return path
