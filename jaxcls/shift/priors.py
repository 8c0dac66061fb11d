"""Label shift: the target's class priors from unlabeled predictions, and corrected posteriors."""

import numpy as np


def bbse(source_labels: np.ndarray, source_preds: np.ndarray, target_preds: np.ndarray,
         num_classes: int) -> np.ndarray:
    """Black-box shift estimation (Lipton et al. 2018): with C[i, j] = P_source(pred i, true j)
    and q[i] = P_target(pred i), the weights w = C^-1 q re-weight the source priors; negative
    weights are clipped and the priors renormalised."""
    c = np.zeros((num_classes, num_classes))
    np.add.at(c, (source_preds, source_labels), 1.0)
    c /= len(source_labels)
    q = np.bincount(target_preds, minlength=num_classes) / len(target_preds)
    w = np.linalg.lstsq(c, q, rcond=None)[0]
    source_priors = np.bincount(source_labels, minlength=num_classes) / len(source_labels)
    priors = np.clip(w, 0, None) * source_priors
    return priors / priors.sum()


def em(probs: np.ndarray, source_priors: np.ndarray, iterations: int = 1000,
       tol: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """EM prior adaptation (Saerens et al. 2002): (target priors, the target posteriors under
    them). Each step re-weights the source posteriors by target / source priors and takes the
    mean posterior as the new target priors."""
    priors = np.asarray(source_priors, np.float64).copy()
    ratio = lambda p: p / np.maximum(source_priors, 1e-12)  # noqa: E731
    for _ in range(iterations):
        post = probs * ratio(priors)
        post /= post.sum(1, keepdims=True)
        new = post.mean(0)
        done = np.abs(new - priors).max() < tol
        priors = new
        if done:
            break
    post = probs * ratio(priors)
    return priors, post / post.sum(1, keepdims=True)
