"""Temperature scaling: one scalar T > 0 that divides the logits, fitted by minimising the
negative log-likelihood on held-out examples; stored beside the checkpoint it calibrates.

Log-probabilities serve as logits (softmax is unchanged by a per-row constant), so averaged
probabilities of test-time augmentation or of an ensemble are calibrated the same way.
"""

import json
import os

import numpy as np
from absl import logging
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

FILENAME = "calibration.json"  # in WORKDIR/checkpoints/STEP/, beside orbax's items


def scaled_log_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    """log softmax(logits / T)."""
    return log_softmax(np.asarray(logits, np.float64) / temperature, axis=-1)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    return float(-np.mean(scaled_log_probs(logits, temperature)[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [exp(-5), exp(5)] minimising the NLL (unimodal in log T: NLL is convex in 1/T)."""
    result = minimize_scalar(lambda log_t: nll(logits, labels, np.exp(log_t)), bounds=(-5, 5),
                             method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def cross_fitted(logits: np.ndarray, labels: np.ndarray, folds: int = 2,
                 seed: int = 0) -> np.ndarray:
    """Out-of-fold calibrated log-probabilities: each fold scaled by the T fitted on the others,
    so no example is scored by a temperature that saw its label."""
    order = np.random.default_rng(seed).permutation(len(labels))
    out = np.empty(logits.shape, np.float64)
    for held in np.array_split(order, folds):
        rest = np.setdiff1d(order, held)
        out[held] = scaled_log_probs(logits[held], fit_temperature(logits[rest], labels[rest]))
    return out


def save(step_dir: str, key: str, record: dict) -> None:
    """Stores `record` (its "temperature" and how it was fitted) under `key` (the TTA spec, ""
    for none) in STEP_DIR/calibration.json; orbax ignores the extra file (tested)."""
    path = os.path.join(step_dir, FILENAME)
    stored = load_all(step_dir)
    stored[key] = record
    with open(path + ".tmp", "w") as f:
        json.dump(stored, f, indent=2)
    os.replace(path + ".tmp", path)


def load_all(step_dir: str) -> dict:
    path = os.path.join(step_dir, FILENAME)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def temperature(step_dir: str, key: str = "") -> float | None:
    """The stored temperature for TTA spec `key`, or None when none was fitted."""
    record = load_all(step_dir).get(key)
    return None if record is None else float(record["temperature"])


def temperature_or_one(step_dir: str, key: str = "") -> float:
    """The stored temperature for TTA spec `key`, or 1.0 (uncalibrated) with a warning saying
    how to fit one. jaxcls.predict and jaxcls.explain both print softmax(logits / this)."""
    t = temperature(step_dir, key)
    if t is None:
        logging.warning("%s has no temperature for TTA %r (run jaxcls.evaluate with that TTA "
                        "first): probabilities are uncalibrated", step_dir, key)
    return t or 1.0
