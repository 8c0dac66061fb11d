"""A conv kernel that whitens image patches, from training-image statistics (airbench's
initialiser of its first layer).

For k x k patches of C channels (d = C k^2 values), the d eigenvectors e_i of the patches'
second-moment matrix (not mean-centred, as airbench), scaled by 1 / sqrt(lambda_i + eps), make
filters whose responses have about identity covariance; the kernel holds them, largest
eigenvalue first, and then their negatives (2d filters), so a GELU after it keeps both signs.
"""

import numpy as np


def patches(images: np.ndarray, k: int) -> np.ndarray:
    """Every k x k patch (stride 1, no padding) of images [N, H, W, C] -> [M, k, k, C]."""
    n, h, w, c = images.shape
    windows = np.lib.stride_tricks.sliding_window_view(images, (k, k), axis=(1, 2))
    # [N, H-k+1, W-k+1, C, k, k] -> [M, k, k, C], the HWI order of a flax kernel
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k, k, c)


def whitening_kernel(images: np.ndarray, k: int, eps: float = 5e-4) -> np.ndarray:
    """HWIO kernel [k, k, C, 2 C k^2] float32 whitening the k x k patches of normalised images
    [N, H, W, C] (float): eigenvectors / sqrt(eigenvalue + eps), then their negatives."""
    flat = patches(np.asarray(images, np.float64), k)
    flat = flat.reshape(len(flat), -1)
    covariance = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(eigenvalues)[::-1]
    filters = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)  # [d, d]: columns
    c = images.shape[-1]
    kernel = filters.reshape(k, k, c, -1)
    return np.concatenate([kernel, -kernel], axis=-1).astype(np.float32)
