"""Offline metrics against scikit-learn, ECE by hand, and temperature scaling."""

import contextlib

import numpy as np
import pytest
import sklearn.metrics as skm
from scipy.special import softmax

from jaxcls import calibration, metrics

C = 6


def _random(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(size=(n, C)) * 2, axis=1)
    return rng.integers(0, C, n), probs


def _ties():
    """Rounded scores: many exact ties, within rows and across examples."""
    labels, probs = _random(1)
    probs = np.round(probs * 4) + 1.0
    return labels, probs / probs.sum(axis=1, keepdims=True)


def _never_predicted():
    """Class 2 is never the argmax."""
    labels, probs = _random(2)
    probs[:, 2] *= 0.01
    return labels, probs / probs.sum(axis=1, keepdims=True)


def _absent_label():
    """Class 4 never occurs in the labels (but is predicted)."""
    labels, probs = _random(3)
    labels = np.where(labels == 4, 0, labels)
    probs[:50, 4] += 5.0
    return labels, probs / probs.sum(axis=1, keepdims=True)


CASES = {"random": lambda: _random(0), "ties": _ties, "never_predicted": _never_predicted,
         "absent_label": _absent_label}


def _break_ties_low_index(probs):
    """The same ranking with ties resolved toward the lower index (jaxcls's convention), for
    scikit-learn, which resolves them the other way."""
    return probs - np.arange(C)[None, :] * 1e-9


@pytest.mark.parametrize("case", CASES)
def test_metrics_match_sklearn(case):
    labels, probs = CASES[case]()
    names = [f"c{i}" for i in range(C)]
    m = metrics.offline(labels, probs, names, top_k=(1, 2, 5))
    preds = probs.argmax(axis=1)
    cls = list(range(C))

    np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(labels, preds,
                                                                              labels=cls))
    ref = skm.classification_report(labels, preds, labels=cls, target_names=names,
                                    output_dict=True, zero_division=0)
    for row in [*names, "macro avg", "weighted avg"]:
        for field, ref_field in (("precision", "precision"), ("recall", "recall"),
                                 ("f1", "f1-score"), ("support", "support")):
            assert m["classification_report"][row][field] == pytest.approx(ref[row][ref_field],
                                                                          abs=1e-12), (row, field)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    for k in (1, 2, 5):
        assert m[f"top{k}"] == pytest.approx(skm.top_k_accuracy_score(
            labels, _break_ties_low_index(probs), k=k, labels=cls)), k
    with pytest.warns(UserWarning) if case == "absent_label" else contextlib.nullcontext():
        ref_bal = skm.balanced_accuracy_score(labels, preds)
    assert m["balanced_accuracy"] == pytest.approx(ref_bal)
    assert m["log_loss"] == pytest.approx(skm.log_loss(labels, probs, labels=cls), rel=1e-9)
    assert m["brier"] == pytest.approx(skm.brier_score_loss(labels, probs, labels=cls,
                                                            scale_by_half=False), rel=1e-9)
    present = np.unique(labels)
    if len(present) == C:
        ref_auc = skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro",
                                    labels=cls)
    else:  # scikit-learn's multi-class AUC refuses absent classes: average the binary ones
        ref_auc = np.mean([skm.roc_auc_score(labels == c, probs[:, c]) for c in present])
    assert m["roc_auc_macro_ovr"] == pytest.approx(ref_auc, rel=1e-12)
    assert m["roc_auc_classes"] == len(present)


def test_top_k_ties_go_to_the_lower_index():
    probs = np.array([[0.25, 0.25, 0.25, 0.25]] * 4)
    labels = np.array([0, 1, 2, 3])
    assert metrics.top_k_accuracy(labels, probs, 1) == 0.25  # only label 0 (= argmax) counts
    assert metrics.top_k_accuracy(labels, probs, 3) == 0.75


def test_ece_by_hand():
    # Confidences 0.95 (bin 14), 0.95 (14), 0.55 (8), 0.35 (5), with 3 bins: 0.95 -> bin 2,
    # 0.55 -> bin 1, 0.35 -> bin 1.
    probs = np.array([[0.95, 0.05, 0.0], [0.05, 0.95, 0.0], [0.55, 0.45, 0.0],
                      [0.35, 0.33, 0.32]])
    labels = np.array([0, 0, 0, 1])  # correct, wrong, correct, wrong
    # 15 bins: bin 14 = {0.95 ok, 0.95 wrong}: acc 0.5 conf 0.95; bin 8 = {0.55 ok}: |1-0.55|;
    # bin 5 = {0.35 wrong}: 0.35.
    by_hand_15 = (2 * 0.45 + 1 * 0.45 + 1 * 0.35) / 4
    assert metrics.expected_calibration_error(labels, probs, 15) == pytest.approx(by_hand_15)
    # 3 bins: (2/3, 1] = the two 0.95s: 0.45 each; (1/3, 2/3] = 0.55 ok and 0.35 wrong:
    # acc 0.5, conf 0.45.
    by_hand_3 = (2 * 0.45 + 2 * 0.05) / 4
    assert metrics.expected_calibration_error(labels, probs, 3) == pytest.approx(by_hand_3)
    # Adaptive, 2 bins of 2 by confidence: {0.35 wrong, 0.55 ok}: |0.5-0.45|; {0.95, 0.95}:
    # |0.5-0.95|.
    by_hand_adaptive = (2 * 0.05 + 2 * 0.45) / 4
    assert metrics.expected_calibration_error(labels, probs, 2, adaptive=True) == pytest.approx(
        by_hand_adaptive)
    # A confidence exactly on an edge belongs to the bin it closes: 0.6 with 5 bins -> (0.4, 0.6].
    bins = metrics.calibration_bins(np.array([0]), np.array([[0.6, 0.4]]), 5)
    assert [b["count"] for b in bins] == [0, 0, 1, 0, 0]


def test_temperature_scaling_fixes_an_over_confident_model():
    # Labels drawn from softmax(z), the model reports z * 3: right ranking, over-confident.
    rng = np.random.default_rng(0)
    n = 6000
    z = rng.normal(size=(n, C)) * 1.5
    labels = np.array([rng.choice(C, p=p) for p in softmax(z, axis=1)])
    logits = 3.0 * z
    fit, test = slice(0, n // 2), slice(n // 2, n)
    t = calibration.fit_temperature(logits[fit], labels[fit])
    assert t == pytest.approx(3.0, rel=0.1)  # recovers the true over-confidence factor
    before = metrics.expected_calibration_error(labels[test], softmax(logits[test], axis=1))
    after = metrics.expected_calibration_error(
        labels[test], np.exp(calibration.scaled_log_probs(logits[test], t)))
    assert before > 0.15 and after < 0.03, (before, after)
    assert calibration.nll(logits[test], labels[test], t) < calibration.nll(logits[test],
                                                                            labels[test])
    # Out-of-fold scaling is close to the held-out one.
    oof = np.exp(calibration.cross_fitted(logits, labels))
    assert metrics.expected_calibration_error(labels, oof) < 0.03
