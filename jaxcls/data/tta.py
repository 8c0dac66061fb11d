"""Test-time augmentation views, on device: `tta_views(images, "flip|crops5")`.

A spec is ops joined by '|'; the views are every combination of the ops' variants:
- `flip`: the image and its horizontal mirror (2 variants);
- `crops5` or `crops5(R)`: the image resized up by R (default 1 / the run's crop_frac), then its
  centre and four corner crops of the original size (5 variants).
"flip|crops5" gives 10 views: each crop and its mirror. Callers average softmax probabilities
over the views.
"""

import re

import jax
import jax.numpy as jnp

_CROPS = re.compile(r"crops5(?:\(([0-9.]+)\))?")


def parse(spec: str, crop_frac: float = 1.0) -> list[tuple[str, float]]:
    """[(op, upscale)] for `spec`; raises ValueError naming a bad op."""
    ops = []
    for op in filter(None, (s.strip() for s in spec.split("|"))):
        crops = _CROPS.fullmatch(op)
        if op == "flip":
            ops.append(("flip", 1.0))
        elif crops:
            scale = float(crops.group(1)) if crops.group(1) else 1.0 / crop_frac
            if scale <= 1.0:
                raise ValueError(f"TTA op {op!r}: crops need an upscale > 1 (the run's crop_frac "
                                 f"is {crop_frac}); write it out, e.g. crops5(1.15)")
            ops.append(("crops5", scale))
        else:
            raise ValueError(f"unknown TTA op {op!r} in {spec!r}; ops: flip, crops5, crops5(R)")
    return ops


def _five_crops(images: jax.Array, scale: float) -> jax.Array:
    n, s, _, c = images.shape
    big = round(s * scale)
    up = jax.image.resize(images.astype(jnp.float32), (n, big, big, c), "bilinear")
    up = jnp.clip(jnp.round(up), 0, 255).astype(images.dtype)
    mid, end = (big - s) // 2, big - s
    corners = [(mid, mid), (0, 0), (0, end), (end, 0), (end, end)]
    return jnp.stack([up[:, y:y + s, x:x + s] for y, x in corners])


def tta_views(images: jax.Array, spec: str, crop_frac: float = 1.0) -> jax.Array:
    """uint8 [N, S, S, 3] -> [V, N, S, S, 3]: the views `spec` names (V = 1 for "")."""
    views = images[None]
    for op, scale in parse(spec, crop_frac):
        if op == "flip":
            views = jnp.concatenate([views, views[:, :, :, ::-1]])
        else:
            views = jnp.concatenate([_five_crops(v, scale) for v in views])
    return views
