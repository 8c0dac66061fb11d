"""Hand-made image features: uint8 [H, W, 3] -> a float32 vector.

- `hog`: scikit-image's histogram of oriented gradients (Dalal and Triggs): gradients of each
  colour channel (the strongest per pixel), `orientations` bins per cell, blocks of cells
  normalised with L2-Hys.
- `lbp`: uniform local binary patterns (8 neighbours, radius 1) of the grey image, one
  histogram per cell of a `lbp_grid` x `lbp_grid` grid.
- `color_hist`: a `color_bins`-bin histogram per RGB channel, as fractions of the pixels.
- `pixels`: the raw pixels scaled to [0, 1].
"""

import dataclasses
import os
import time
from collections.abc import Callable

import numpy as np
from absl import logging

PROGRESS_EVERY_S = 10.0


@dataclasses.dataclass(frozen=True)
class FeatureParams:
    hog_orientations: int = 9
    hog_pixels_per_cell: int = 8
    hog_cells_per_block: int = 2
    lbp_grid: int = 4
    color_bins: int = 16


def hog(image: np.ndarray, p: FeatureParams) -> np.ndarray:
    from skimage.feature import hog as skimage_hog

    return skimage_hog(image, orientations=p.hog_orientations,
                       pixels_per_cell=(p.hog_pixels_per_cell,) * 2,
                       cells_per_block=(p.hog_cells_per_block,) * 2, block_norm="L2-Hys",
                       channel_axis=-1).astype(np.float32)


def lbp(image: np.ndarray, p: FeatureParams) -> np.ndarray:
    from skimage.color import rgb2gray
    from skimage.feature import local_binary_pattern

    codes = local_binary_pattern((rgb2gray(image) * 255).astype(np.uint8), 8, 1, "uniform")
    hists = []
    for rows in np.array_split(codes, p.lbp_grid, axis=0):
        for cell in np.array_split(rows, p.lbp_grid, axis=1):
            h = np.bincount(cell.astype(np.int64).ravel(), minlength=10)  # 8 + 2 uniform codes
            hists.append(h / max(cell.size, 1))
    return np.concatenate(hists).astype(np.float32)


def color_hist(image: np.ndarray, p: FeatureParams) -> np.ndarray:
    bins = (image.astype(np.int64) * p.color_bins) // 256  # [H, W, 3] in 0..bins-1
    hists = [np.bincount(bins[..., c].ravel(), minlength=p.color_bins) for c in range(3)]
    return (np.concatenate(hists) / (image.shape[0] * image.shape[1])).astype(np.float32)


def pixels(image: np.ndarray, p: FeatureParams) -> np.ndarray:
    return image.astype(np.float32).ravel() / 255.0


FEATURES: dict[str, Callable[[np.ndarray, FeatureParams], np.ndarray]] = {
    "hog": hog, "lbp": lbp, "color_hist": color_hist, "pixels": pixels}


def check_name(name: str) -> None:
    if name not in FEATURES:
        raise ValueError(f"--features={name!r} is unknown; use one of {sorted(FEATURES)}")


def _chunk(name: str, images: np.ndarray, p: FeatureParams) -> np.ndarray:
    return np.stack([FEATURES[name](im, p) for im in images])


def extract(name: str, images: np.ndarray, params: FeatureParams | None = None,
            n_jobs: int | None = None, chunk: int = 1000, label: str = "") -> np.ndarray:
    """Features of every image in uint8 [N, H, W, 3], float32 [N, D], computed in `n_jobs`
    worker processes (default: all cores) in chunks, with a progress line every 10 s."""
    check_name(name)
    params = params or FeatureParams()
    from joblib import Parallel, delayed

    n_jobs = n_jobs or os.cpu_count() or 1
    starts = range(0, len(images), chunk)
    out, done, last, t0 = [], 0, time.monotonic(), time.monotonic()
    jobs = (delayed(_chunk)(name, images[s:s + chunk], params) for s in starts)
    for block in Parallel(n_jobs=n_jobs, return_as="generator")(jobs):
        out.append(block)
        done += len(block)
        if time.monotonic() - last >= PROGRESS_EVERY_S and done < len(images):
            logging.info("%s features %s: %d/%d images", name, label, done, len(images))
            last = time.monotonic()
    logging.info("%s features %s: %d images -> %d dims in %.1f s", name, label, len(images),
                 out[0].shape[1] if out else 0, time.monotonic() - t0)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
