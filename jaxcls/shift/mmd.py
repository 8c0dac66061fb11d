"""Two-sample test: kernel maximum mean discrepancy with a permutation p-value."""

import numpy as np


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0.0)


def mmd2(k: np.ndarray, n: int) -> float:
    """Unbiased MMD^2 of the first n rows/columns of kernel matrix k against the rest."""
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    m = len(k) - n
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
                 + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


def test(x: np.ndarray, y: np.ndarray, permutations: int = 200, max_samples: int = 1000,
         seed: int = 0) -> dict:
    """MMD^2 between samples x and y (an RBF kernel, bandwidth the median pairwise distance)
    and its permutation p-value: the fraction of random relabellings of the pooled samples
    whose MMD^2 is at least the observed one (with the +1 correction)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float64)[rng.permutation(len(x))[:max_samples]]
    y = np.asarray(y, np.float64)[rng.permutation(len(y))[:max_samples]]
    pooled = np.concatenate([x, y])
    d = _sq_dists(pooled, pooled)
    bandwidth = np.median(d[np.triu_indices(len(d), 1)])
    k = np.exp(-d / max(bandwidth, 1e-12))
    observed = mmd2(k, len(x))
    exceed = 0
    for _ in range(permutations):
        p = rng.permutation(len(pooled))
        exceed += mmd2(k[np.ix_(p, p)], len(x)) >= observed
    return {"mmd2": observed, "p_value": (exceed + 1) / (permutations + 1),
            "samples": [len(x), len(y)], "permutations": permutations,
            "bandwidth": float(bandwidth)}
