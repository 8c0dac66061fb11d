"""Per-image out-of-distribution scores (higher = more unusual) and their thresholds."""

import numpy as np
from scipy.special import logsumexp, softmax


def msp(logits: np.ndarray) -> np.ndarray:
    """1 - the maximum softmax probability (Hendrycks & Gimpel 2017)."""
    return 1.0 - softmax(logits, axis=-1).max(axis=-1)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The free energy -T logsumexp(logits / T) (Liu et al. 2020)."""
    return -temperature * logsumexp(np.asarray(logits, np.float64) / temperature, axis=-1)


class Mahalanobis:
    """Class means and one shared covariance of training features (Lee et al. 2018); the score
    is the squared Mahalanobis distance to the nearest class mean."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, ridge: float = 1e-6):
        x = np.asarray(features, np.float64)
        self.classes = np.unique(labels)
        self.means = np.stack([x[labels == c].mean(0) for c in self.classes])
        centred = x - self.means[np.searchsorted(self.classes, labels)]
        cov = centred.T @ centred / len(x)
        cov += ridge * np.trace(cov) / len(cov) * np.eye(len(cov))
        self.precision = np.linalg.inv(cov)

    def __call__(self, features: np.ndarray, chunk: int = 4096) -> np.ndarray:
        out = []
        for s in range(0, len(features), chunk):
            d = np.asarray(features[s:s + chunk], np.float64)[:, None] - self.means[None]
            out.append(np.einsum("ncd,de,nce->nc", d, self.precision, d).min(axis=1))
        return np.concatenate(out)


def threshold(in_distribution: np.ndarray, keep: float = 0.95) -> float:
    """The score below which a fraction `keep` of in-distribution images fall."""
    return float(np.quantile(in_distribution, keep))
