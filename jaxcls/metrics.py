"""Train/eval metrics as clu collections (masked averages of loss, top-1 and top-5), and the
offline metrics of a finished run, computed on the host with numpy from labels and probabilities.
"""

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics


@flax.struct.dataclass
class Top1Metrics(metrics.Collection):
    """For fewer than TOP5_MIN_CLASSES classes, where top-5 would be 1 by construction."""
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Average.from_output("correct1")


@flax.struct.dataclass
class Metrics(metrics.Collection):  # clu builds collections from their own fields
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Average.from_output("correct1")
    top5: metrics.Average.from_output("correct5")


@flax.struct.dataclass
class TrainMetrics(Metrics):
    grad_norm: metrics.Average.from_output("grad_norm")  # before clipping, one value per step


@flax.struct.dataclass
class Top1TrainMetrics(Top1Metrics):
    grad_norm: metrics.Average.from_output("grad_norm")


@flax.struct.dataclass
class DistillMetrics(Metrics):
    """Eval metrics of a distilled student: agreement and KL with its teacher beside accuracy."""
    teacher_agreement: metrics.Average.from_output("teacher_agreement")
    teacher_kl: metrics.Average.from_output("teacher_kl")


@flax.struct.dataclass
class Top1DistillMetrics(Top1Metrics):
    teacher_agreement: metrics.Average.from_output("teacher_agreement")
    teacher_kl: metrics.Average.from_output("teacher_kl")


TOP5_MIN_CLASSES = 6  # top-5 is reported only with at least this many classes


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the label is among the k highest logits (ties broken by top_k's order), else 0."""
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def gather(loss: jax.Array, logits: jax.Array, labels: jax.Array, mask: jax.Array) -> Metrics:
    """Per-example values -> a Metrics collection that counts only mask == 1 examples (a
    Top1Metrics, without top5, for fewer than TOP5_MIN_CLASSES classes)."""
    if logits.shape[-1] < TOP5_MIN_CLASSES:
        return Top1Metrics.single_from_model_output(
            loss=loss, correct1=topk_correct(logits, labels, 1), mask=mask)
    return Metrics.single_from_model_output(
        loss=loss, correct1=topk_correct(logits, labels, 1),
        correct5=topk_correct(logits, labels, 5), mask=mask)


def with_grad_norm(m: Metrics, grad_norm: jax.Array) -> TrainMetrics:
    """`m` plus the step's global gradient norm."""
    fields = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}
    cls = {Metrics: TrainMetrics, Top1Metrics: Top1TrainMetrics,
           MultilabelMetrics: MultilabelTrainMetrics}[type(m)]
    return cls(**fields, grad_norm=metrics.Average.from_model_output(grad_norm))


def with_teacher(m: Metrics, agreement: jax.Array, kl: jax.Array, mask: jax.Array
                 ) -> DistillMetrics:
    """`m` plus per-example student-teacher top-1 agreement and KL [N], counted where mask is 1."""
    fields = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}
    cls = {Metrics: DistillMetrics, Top1Metrics: Top1DistillMetrics}[type(m)]
    return cls(**fields, teacher_agreement=metrics.Average.from_model_output(agreement, mask=mask),
               teacher_kl=metrics.Average.from_model_output(kl, mask=mask))


def merge_on_host(collections: list[metrics.Collection]) -> metrics.Collection:
    """The step outputs `collections` (replicated device arrays) merged with numpy on the host.

    Merging on device would run eager computations on global arrays between the jitted steps;
    in a multi-process run each process launches them in its own order and the processes can
    deadlock in their collectives. Reading the local replicas and adding here needs none.
    """
    if not collections:
        raise ValueError("no metrics to merge")
    return functools.reduce(lambda a, b: a.merge(b), jax.device_get(collections))


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
            top_k: tuple[int, ...] = (5,)) -> dict:
    """Every offline metric of one evaluation as a JSON-ready dict (`accuracy` is top-1)."""
    num_classes = probs.shape[1]
    cm = confusion_matrix(labels, probs.argmax(axis=1), num_classes)
    auc = roc_auc_ovr(labels, probs)
    recall = _ratio(np.diag(cm).astype(np.float64), cm.sum(axis=1))
    present = cm.sum(axis=1) > 0
    out = {"examples": int(len(labels)), "accuracy": float(np.trace(cm) / max(len(labels), 1))}
    for k in top_k:
        if k < num_classes:  # top-k of k or fewer classes is 1 by construction
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


# ---------------------------------------------------------------------------------------------
# Multi-label: one sigmoid per class, multi-hot float labels [N, C]. A label is predicted when
# its logit is >= 0 (probability >= 0.5) unless per-label thresholds say otherwise. `accuracy`
# is the fraction of all (example, label) decisions that are right (Hamming accuracy), so the
# eval lines keep their `accuracy`; `exact_match` counts examples with every label right.


@flax.struct.dataclass
class MultilabelMetrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Average.from_output("label_accuracy")
    exact_match: metrics.Average.from_output("exact_match")


@flax.struct.dataclass
class MultilabelTrainMetrics(MultilabelMetrics):
    grad_norm: metrics.Average.from_output("grad_norm")


@flax.struct.dataclass
class MeanAveragePrecision(metrics.CollectingMetric.from_outputs(("scores", "labels", "mask"))):
    """Collects scores on the host; computes the mean of average precision over the labels
    that have positive examples."""

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores [N, C], labels [N, C]) of the real examples collected (padding dropped)."""
        v = super().compute()
        keep = v["mask"] > 0
        return v["scores"][keep], v["labels"][keep]

    def compute(self) -> float:
        return float(np.nanmean(average_precision(*self.arrays())))


@flax.struct.dataclass
class MultilabelEvalMetrics(metrics.Collection):  # clu builds collections from their own fields
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Average.from_output("label_accuracy")
    exact_match: metrics.Average.from_output("exact_match")
    mAP: MeanAveragePrecision  # noqa: N815 (the name everyone reads in metrics.jsonl)


def gather_multilabel(loss: jax.Array, logits: jax.Array, labels: jax.Array, mask: jax.Array,
                      collect: bool = False) -> MultilabelMetrics:
    """Per-example loss, logits [N, C] and multi-hot labels [N, C] -> a collection counting only
    mask == 1 examples; with `collect`, also the scores for mAP (eval only: they go to the host)."""
    right = (logits >= 0) == (labels >= 0.5)
    outputs = dict(loss=loss, label_accuracy=jnp.mean(right, axis=-1),
                   exact_match=jnp.all(right, axis=-1).astype(jnp.float32), mask=mask)
    if collect:
        return MultilabelEvalMetrics.single_from_model_output(
            scores=jax.nn.sigmoid(logits.astype(jnp.float32)), labels=labels, **outputs)
    return MultilabelMetrics.single_from_model_output(**outputs)


def _ranked(scores: np.ndarray, positives: np.ndarray):
    """Distinct scores from high to low with true and false positives when predicting every
    example scoring >= each of them."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positives[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    return s[last_of_tie], tp, last_of_tie + 1 - tp


def average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per label [C]: sum over thresholds of (recall step) x precision, tied scores as one
    threshold; NaN for a label without positive examples."""
    out = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        y = labels[:, c] >= 0.5
        if y.any():
            _, tp, fp = _ranked(scores[:, c], y)
            out[c] = np.sum(np.diff(tp, prepend=0) / y.sum() * tp / (tp + fp))
    return out


def f1_per_label(scores: np.ndarray, labels: np.ndarray, thresholds) -> np.ndarray:
    """Per label [C]: F1 of predicting score >= threshold (0 where there is nothing to find
    and nothing predicted)."""
    pred, y = scores >= np.asarray(thresholds), labels >= 0.5
    tp = (pred & y).sum(0)
    denominator = pred.sum(0) + y.sum(0)
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def fit_thresholds(scores: np.ndarray, labels: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per label [C]: the score threshold with the highest F1 on (scores, labels); `default`
    for a label without positive examples (there is no F1 to maximise)."""
    out = np.full(scores.shape[1], default, np.float64)
    for c in range(scores.shape[1]):
        y = labels[:, c] >= 0.5
        if y.any():
            s, tp, fp = _ranked(scores[:, c], y)
            out[c] = s[np.argmax(2 * tp / (tp + fp + y.sum()))]
    return out
