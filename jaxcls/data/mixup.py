"""Mixup and CutMix on device, per example, into the soft targets the loss consumes.

timm's semantics with a lambda per example: each example is mixed with probability `prob`;
with both alphas > 0 it uses CutMix with probability `switch_prob`, else mixup. Mixup draws
lambda ~ Beta(mixup_alpha, mixup_alpha) and blends the two images; CutMix pastes a box of area
about (1 - lambda) with lambda ~ Beta(cutmix_alpha, cutmix_alpha) (or box sides drawn uniformly
in `cutmix_minmax` x the image side), and its lambda is then corrected to the area actually kept
after clipping the box at the borders. Targets mix the same way: lambda y_i + (1 - lambda) y_j.

Example i is paired with example i - 1 (a roll by one along the batch), so under data-parallel
sharding only one row crosses each device boundary.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Mixup:
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    cutmix_minmax: tuple[float, float] | None = None
    prob: float = 1.0
    switch_prob: float = 0.5

    def __post_init__(self):
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(f"config.mixup alphas must be >= 0, got mixup_alpha="
                             f"{self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}")
        for key in ("prob", "switch_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"config.mixup.{key}={getattr(self, key)} must be in [0, 1]")
        if self.cutmix_minmax is not None:
            lo, hi = self.cutmix_minmax
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"config.mixup.cutmix_minmax={self.cutmix_minmax}: need "
                                 f"0 < low <= high <= 1 (or () for off)")

    @property
    def use_cutmix(self) -> bool:
        return self.cutmix_alpha > 0 or self.cutmix_minmax is not None

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.use_cutmix)


def _cutmix_boxes(rng: jax.Array, u: jax.Array, settings: Mixup, h: int, w: int) -> jax.Array:
    """Per-example masks [n, h, w] of the pasted box (True: the partner's pixel); `u` holds
    4 uniforms per example."""
    n = u.shape[0]
    if settings.cutmix_minmax is not None:
        lo, hi = settings.cutmix_minmax
        box_h, box_w = (lo + (hi - lo) * u[:, 2]) * h, (lo + (hi - lo) * u[:, 3]) * w
    else:
        lam = jax.random.beta(rng, settings.cutmix_alpha, settings.cutmix_alpha, (n,))
        cut = jnp.sqrt(1.0 - lam)
        box_h, box_w = cut * h, cut * w
    half_h, half_w = box_h.astype(jnp.int32) // 2, box_w.astype(jnp.int32) // 2
    cy = jnp.minimum(jnp.floor(u[:, 0] * h), h - 1).astype(jnp.int32)  # box centre: any pixel
    cx = jnp.minimum(jnp.floor(u[:, 1] * w), w - 1).astype(jnp.int32)
    top, bottom = jnp.clip(cy - half_h, 0, h), jnp.clip(cy + half_h, 0, h)
    left, right = jnp.clip(cx - half_w, 0, w), jnp.clip(cx + half_w, 0, w)
    ys = jnp.arange(h)[None, :, None]
    xs = jnp.arange(w)[None, None, :]
    return ((ys >= top[:, None, None]) & (ys < bottom[:, None, None])
            & (xs >= left[:, None, None]) & (xs < right[:, None, None]))


def mix(rng: jax.Array, images: jax.Array, targets: jax.Array, settings: Mixup
        ) -> tuple[jax.Array, jax.Array]:
    """(images [N, H, W, C] float, targets [N, K]) -> the mixed pair, one lambda per example."""
    if not settings.enabled:
        return images, targets
    n, h, w, _ = images.shape
    uniform_rng, mixup_rng, cutmix_rng = jax.random.split(rng, 3)
    u = jax.random.uniform(uniform_rng, (n, 6))  # one call: see augment_ops on compile time
    partner_images = jnp.roll(images, 1, axis=0)
    partner_targets = jnp.roll(targets, 1, axis=0)
    applied = u[:, 0] < settings.prob
    if settings.mixup_alpha > 0 and settings.use_cutmix:
        cutmix = u[:, 1] < settings.switch_prob
    else:
        cutmix = jnp.full((n,), settings.use_cutmix)
    cutmix &= applied
    if settings.mixup_alpha > 0:
        lam = jax.random.beta(mixup_rng, settings.mixup_alpha, settings.mixup_alpha, (n,))
        lam = jnp.where(applied & ~cutmix, lam, 1.0)
    else:
        lam = jnp.ones((n,))
    out = (lam[:, None, None, None] * images
           + (1.0 - lam[:, None, None, None]) * partner_images)
    if settings.use_cutmix:
        box = _cutmix_boxes(cutmix_rng, u[:, 2:], settings, h, w) & cutmix[:, None, None]
        out = jnp.where(box[..., None], partner_images, out)
        kept = 1.0 - jnp.mean(box, axis=(1, 2))  # the lambda of the area actually pasted
        lam = jnp.where(cutmix, kept, lam)
    lam = lam.astype(targets.dtype)[:, None]
    return out.astype(images.dtype), lam * targets + (1.0 - lam) * partner_targets


def settings_from(values: dict, defaults: dict) -> Mixup:
    """`Mixup` from config.mixup (a ConfigDict or dict); an unknown key fails naming it."""
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ValueError(f"unknown config.mixup key(s) {unknown}; valid keys: {sorted(defaults)}")
    merged = {**defaults, **values}
    for key, value in merged.items():
        if key == "cutmix_minmax":
            ok = isinstance(value, tuple | list) and len(value) in (0, 2)
            ok = ok and all(isinstance(v, int | float) and math.isfinite(v) for v in value)
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise ValueError(f"config.mixup.{key}={value!r} has the wrong type (default "
                             f"{defaults[key]!r})")
    minmax = tuple(float(v) for v in merged.pop("cutmix_minmax")) or None
    return Mixup(cutmix_minmax=minmax, **{k: float(v) for k, v in merged.items()})
