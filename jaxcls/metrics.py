"""Train/eval metrics as clu collections (masked averages of loss, top-1 and top-5), and the
offline metrics of a finished run, computed on the host with numpy from labels and probabilities.
"""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics


@flax.struct.dataclass
class Metrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Average.from_output("correct1")
    top5: metrics.Average.from_output("correct5")


@flax.struct.dataclass
class TrainMetrics(Metrics):
    grad_norm: metrics.Average.from_output("grad_norm")  # before clipping, one value per step


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the label is among the k highest logits (ties broken by top_k's order), else 0."""
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def gather(loss: jax.Array, logits: jax.Array, labels: jax.Array, mask: jax.Array) -> Metrics:
    """Per-example values -> a Metrics collection that counts only mask == 1 examples."""
    return Metrics.single_from_model_output(
        loss=loss, correct1=topk_correct(logits, labels, 1),
        correct5=topk_correct(logits, labels, 5), mask=mask)


def with_grad_norm(m: Metrics, grad_norm: jax.Array) -> TrainMetrics:
    """`m` plus the step's global gradient norm."""
    fields = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}
    return TrainMetrics(**fields, grad_norm=metrics.Average.from_model_output(grad_norm))


def to_host(collection: Metrics) -> dict[str, float]:
    """Final values as Python floats (a host sync: call at log points only)."""
    return {k: float(v) for k, v in jax.device_get(collection.compute()).items()}


# ---- offline metrics: numpy on the host, labels int [N], probs float [N, C] ------------------
# Conventions (tests/test_metrics.py checks each against scikit-learn):
# - ties in the scores go to the lower class index, like np.argmax and jax.lax.top_k;
# - a ratio with a zero denominator (precision of a class never predicted, recall of a class
#   absent from the labels) is 0, as scikit-learn's zero_division=0; macro averages run over
#   all C classes, except balanced accuracy and ROC AUC, which skip classes absent from labels.


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """int [C, C]: row = true class, column = predicted class."""
    return np.bincount(labels * num_classes + preds,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def top_k_accuracy(labels: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Fraction of examples whose label is among the k highest scores (ties: lower index first)."""
    label_score = probs[np.arange(len(labels)), labels][:, None]
    lower_index = np.arange(probs.shape[1])[None, :] < labels[:, None]
    rank = np.sum((probs > label_score) | ((probs == label_score) & lower_index), axis=1)
    return float(np.mean(rank < k))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def classification_report(cm: np.ndarray, class_names: list[str]) -> dict:
    """Per-class precision, recall, F1 and support, with macro and weighted averages."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    report = {name: {"precision": float(p), "recall": float(r), "f1": float(f),
                     "support": int(s)}
              for name, p, r, f, s in zip(class_names, precision, recall, f1, support,
                                          strict=True)}
    weights = support / max(support.sum(), 1)
    for avg, w in (("macro avg", np.full(len(tp), 1 / len(tp))), ("weighted avg", weights)):
        report[avg] = {"precision": float(w @ precision), "recall": float(w @ recall),
                       "f1": float(w @ f1), "support": int(support.sum())}
    return report


def roc_auc_ovr(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-class one-vs-rest ROC AUC [C] (Mann-Whitney U, ties count half); NaN for a class
    absent from the labels or present in all of them."""
    from scipy.stats import rankdata

    ranks = rankdata(probs, axis=0)  # average ranks of tied scores
    positive = labels[:, None] == np.arange(probs.shape[1])[None, :]
    n_pos = positive.sum(axis=0).astype(np.float64)
    n_neg = len(labels) - n_pos
    u = np.sum(ranks * positive, axis=0) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean -log p(label), with p clipped to [eps, 1 - eps] of its dtype."""
    eps = np.finfo(probs.dtype).eps
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1 - eps))))


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean over examples of the squared error summed over classes (Brier's original multi-class
    score, 0..2; scikit-learn's brier_score_loss with scale_by_half=False)."""
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def calibration_bins(labels: np.ndarray, probs: np.ndarray, num_bins: int = 15,
                     adaptive: bool = False) -> list[dict]:
    """Top-1 confidence bins: equal width ((i/B, (i+1)/B]) or, `adaptive`, equal count (examples
    sorted by confidence, split into B nearly equal groups). Each bin: its confidence range,
    count, mean confidence and accuracy."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    if adaptive:
        groups = np.array_split(np.argsort(confidence, kind="stable"), num_bins)
    else:
        which = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
        groups = [np.flatnonzero(which == b) for b in range(num_bins)]
    bins = []
    for b, idx in enumerate(groups):
        lo, hi = ((float(confidence[idx].min()), float(confidence[idx].max())) if adaptive
                  and len(idx) else (b / num_bins, (b + 1) / num_bins))
        bins.append({"lo": lo, "hi": hi, "count": int(len(idx)),
                     "confidence": float(confidence[idx].mean()) if len(idx) else 0.0,
                     "accuracy": float(correct[idx].mean()) if len(idx) else 0.0})
    return bins


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, num_bins: int = 15,
                               adaptive: bool = False) -> float:
    """Sum over bins of (bin count / N) * |accuracy - mean confidence| (see calibration_bins)."""
    bins = calibration_bins(labels, probs, num_bins, adaptive)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins)
                 / len(labels))


def offline(labels: np.ndarray, probs: np.ndarray, class_names: list[str],
            top_k: tuple[int, ...] = (1, 5)) -> dict:
    """Every offline metric of one evaluation as a JSON-ready dict."""
    num_classes = probs.shape[1]
    cm = confusion_matrix(labels, probs.argmax(axis=1), num_classes)
    auc = roc_auc_ovr(labels, probs)
    recall = _ratio(np.diag(cm).astype(np.float64), cm.sum(axis=1))
    present = cm.sum(axis=1) > 0
    out = {"examples": int(len(labels)), "accuracy": float(np.trace(cm) / max(len(labels), 1))}
    for k in top_k:
        if k <= num_classes:
            out[f"top{k}"] = top_k_accuracy(labels, probs, k)
    out.update({
        "balanced_accuracy": float(recall[present].mean()),
        "roc_auc_macro_ovr": float(np.nanmean(auc)) if np.isfinite(auc).any() else None,
        "roc_auc_classes": int(np.isfinite(auc).sum()),  # classes the macro AUC averages
        "log_loss": log_loss(labels, probs),
        "brier": brier_score(labels, probs),
        "ece_15": expected_calibration_error(labels, probs, 15),
        "ece_adaptive_15": expected_calibration_error(labels, probs, 15, adaptive=True),
        "classification_report": classification_report(cm, class_names),
        "roc_auc_per_class": {n: (None if np.isnan(a) else float(a))
                              for n, a in zip(class_names, auc, strict=True)},
        "confusion_matrix": cm.tolist(),
    })
    return out
