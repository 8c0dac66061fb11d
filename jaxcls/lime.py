"""LIME for images (Ribeiro et al., 2016): which superpixels a prediction rests on.

The image is cut into superpixels (scikit-image's SLIC); `samples` random on/off patterns over
them (the first all on, as the lime package does) become images whose off superpixels take the
baseline colour; their probabilities for the explained class, predicted in jitted batches,
are fitted by a weighted ridge regression on the patterns, weighted by an exponential kernel
(width 0.25) on the cosine distance to the all-on pattern. A superpixel's weight in that
linear surrogate is its importance; the map gives every pixel its superpixel's weight.

    python -m jaxcls.explain --workdir=W IMAGES... --method=lime --out=DIR \
        [--samples=1000] [--segments=50] [--baseline=black|mean]
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

KERNEL_WIDTH = 0.25  # the lime package's default for images
# SLIC's colour-vs-space trade-off (Lab units): skimage's default 10 lets texture and noise
# merge tiny images into 2-4 regions; 30 keeps about the requested count there and still
# follows strong edges.
COMPACTNESS = 30.0


def superpixels(image: np.ndarray, segments: int) -> np.ndarray:
    """Labels [H, W] (0..K-1) of about `segments` SLIC superpixels of `image` [H, W, 3] (any
    float scale: it is rescaled to [0, 1] per image first)."""
    from skimage.segmentation import slic

    x = np.asarray(image, np.float64)
    x = (x - x.min()) / max(float(x.max() - x.min()), 1e-12)
    labels = slic(x, n_segments=segments, compactness=COMPACTNESS, start_label=0, channel_axis=-1)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)  # dense 0..K-1


def patterns(num_segments: int, samples: int, seed: int = 0) -> np.ndarray:
    """[samples, K] 0/1: the first row all on, the rest uniform random."""
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 2, (samples, num_segments)).astype(np.float32)
    z[0] = 1.0
    return z


def masked(image: jax.Array, labels: jax.Array, z: jax.Array, fill: jax.Array) -> jax.Array:
    """[S, H, W, 3]: `image` [H, W, 3] with the superpixels off in each pattern of `z` [S, K]
    replaced by `fill` (broadcastable to the image)."""
    keep = z[:, labels][..., None]  # [S, H, W, 1]
    return keep * image[None] + (1.0 - keep) * fill


def surrogate(z: np.ndarray, scores: np.ndarray, alpha: float = 1.0) -> dict:
    """The weighted ridge fit of `scores` [S] on the patterns `z` [S, K]: {"weights" [K],
    "intercept", "r2" (weighted, of the fit on its own samples)}."""
    from sklearn.linear_model import Ridge

    on = np.ones(z.shape[1])
    cosine = 1.0 - (z @ on) / np.maximum(np.linalg.norm(z, axis=1) * np.linalg.norm(on), 1e-12)
    kernel = np.sqrt(np.exp(-(cosine ** 2) / KERNEL_WIDTH ** 2))
    fit = Ridge(alpha=alpha).fit(z, scores, sample_weight=kernel)
    return {"weights": fit.coef_, "intercept": float(fit.intercept_),
            "r2": float(fit.score(z, scores, sample_weight=kernel))}


def explain_image(probs_fn: Callable[[jax.Array], jax.Array], image: jax.Array, target: int,
                  fill: jax.Array, samples: int = 1000, segments: int = 50,
                  batch_size: int = 256, seed: int = 0) -> dict:
    """LIME for one normalised image [H, W, 3] and class `target`: `probs_fn` maps a batch of
    normalised images [B, H, W, 3] to probabilities [B, C] (jitted; called on fixed-size
    batches). Returns {"map" [H, W] (each pixel its superpixel's weight), "labels" [H, W],
    "weights" [K], "intercept", "r2"}."""
    labels = superpixels(np.asarray(image), segments)
    z = patterns(int(labels.max()) + 1, samples, seed)
    padded = -(-samples // batch_size) * batch_size
    zp = np.concatenate([z, np.ones((padded - samples, z.shape[1]), np.float32)])
    scores = []
    for start in range(0, padded, batch_size):
        batch = masked(image, jnp.asarray(labels), jnp.asarray(zp[start:start + batch_size]),
                       fill)
        scores.append(np.asarray(jax.device_get(probs_fn(batch)))[:, target])
    fit = surrogate(z, np.concatenate(scores)[:samples])
    return {"map": fit["weights"][labels].astype(np.float32), "labels": labels, **fit}
