"""Test-time augmentation views, on device: `tta_views(images, "flip|crops5")`.

A spec is ops joined by '|'; the views are every combination of the ops' variants:
- `flip`: the image and its horizontal mirror (2 variants, weights 1/2 each);
- `crops5` or `crops5(R)`: the image resized up by R, then its centre and four corner crops of
  the original size (5 variants, 1/5 each). The default R is 1 / the run's crop_frac; a run
  that does not crop (crop_frac 1.0, as the CIFAR recipes) gets FULL_FRAME_UPSCALE (32 px ->
  36 px: the crops shift by up to 4 px, the usual CIFAR padding). Write `crops5(R)` for another
  factor;
- `translate(P)`: the image, and the image shifted by P pixels up-left and down-right, reflect
  padded (3 variants, weights 1/2, 1/4, 1/4: airbench's TTA, "translate(1)|flip", 6 views).
"flip|crops5" gives 10 views: each crop and its mirror. Each view has a weight, the product of
its variants' (`view_weights`): offline evaluation averages the views' probabilities with them,
the in-training eval (config.eval_tta) their logits, as airbench.
"""

import re

import jax
import jax.numpy as jnp

_CROPS = re.compile(r"crops5(?:\(([0-9.]+)\))?")
_TRANSLATE = re.compile(r"translate\(([0-9]+)\)")
FULL_FRAME_UPSCALE = 1.125  # crops5's default R when crop_frac is 1.0 (nothing to undo)
_WEIGHTS = {"flip": (0.5, 0.5), "crops5": (0.2,) * 5, "translate": (0.5, 0.25, 0.25)}


def parse(spec: str, crop_frac: float = 1.0) -> list[tuple[str, float]]:
    """[(op, argument: crops5's upscale, translate's pixels)] for `spec`; raises ValueError
    naming a bad op."""
    ops = []
    for op in filter(None, (s.strip() for s in spec.split("|"))):
        crops, translate = _CROPS.fullmatch(op), _TRANSLATE.fullmatch(op)
        if op == "flip":
            ops.append(("flip", 1.0))
        elif crops:
            if crops.group(1):
                scale = float(crops.group(1))
            else:
                scale = 1.0 / crop_frac if crop_frac < 1.0 else FULL_FRAME_UPSCALE
            if scale <= 1.0:
                raise ValueError(f"TTA op {op!r}: crops need an upscale R > 1, e.g. crops5(1.15)")
            ops.append(("crops5", scale))
        elif translate and int(translate.group(1)) > 0:
            ops.append(("translate", int(translate.group(1))))
        else:
            raise ValueError(f"unknown TTA op {op!r} in {spec!r}; ops: flip, crops5, crops5(R), "
                             f"translate(P) with P >= 1")
    return ops


def folder_name(spec: str) -> str:
    """`spec` as a folder-name suffix: "flip|crops5(1.15)" -> "flip+crops5-1.15" ("" for none),
    so outputs of different TTA settings do not overwrite each other."""
    ops = [s.strip() for s in spec.split("|") if s.strip()]
    return "+".join(re.sub(r"\((.*)\)", r"-\1", op).replace(" ", "") for op in ops)


def _five_crops(images: jax.Array, scale: float) -> jax.Array:
    n, s, _, c = images.shape
    big = round(s * scale)
    up = jax.image.resize(images.astype(jnp.float32), (n, big, big, c), "bilinear")
    up = jnp.clip(jnp.round(up), 0, 255).astype(images.dtype)
    mid, end = (big - s) // 2, big - s
    corners = [(mid, mid), (0, 0), (0, end), (end, 0), (end, end)]
    return jnp.stack([up[:, y:y + s, x:x + s] for y, x in corners])


def _translates(images: jax.Array, pixels: int) -> jax.Array:
    s = images.shape[1]
    padded = jnp.pad(images, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)),
                     mode="reflect")
    ends = 2 * pixels
    return jnp.stack([images, padded[:, :s, :s], padded[:, ends:ends + s, ends:ends + s]])


def tta_views(images: jax.Array, spec: str, crop_frac: float = 1.0) -> jax.Array:
    """uint8 [N, S, S, 3] -> [V, N, S, S, 3]: the views `spec` names (V = 1 for "")."""
    views = images[None]
    for op, arg in parse(spec, crop_frac):
        if op == "flip":
            views = jnp.concatenate([views, views[:, :, :, ::-1]])
        elif op == "crops5":
            views = jnp.concatenate([_five_crops(v, arg) for v in views])
        else:
            views = jnp.concatenate([_translates(v, arg) for v in views])
    return views


def view_weights(spec: str, crop_frac: float = 1.0) -> jax.Array:
    """float32 [V]: the weight of each of `tta_views`' views (summing to 1), in their order."""
    weights = jnp.ones((1,), jnp.float32)
    for op, _ in parse(spec, crop_frac):
        variants = jnp.asarray(_WEIGHTS[op], jnp.float32)
        if op == "flip":  # the mirrors come after all the views so far
            weights = (variants[:, None] * weights[None, :]).reshape(-1)
        else:  # each view's variants follow it
            weights = (weights[:, None] * variants[None, :]).reshape(-1)
    return weights
