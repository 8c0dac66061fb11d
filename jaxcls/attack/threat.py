"""The threat model of an attack: an L-inf or L2 ball of radius eps around each image, in pixel
space [0, 1]; norms, steepest-ascent directions and projections, per example."""

import fractions

import jax
import jax.numpy as jnp

NORMS = ("linf", "l2")
TINY = 1e-12  # AutoAttack's guard against dividing by a zero norm


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}: use one of {NORMS}")
    return norm


def parse_eps(spec: str | float) -> float:
    """'8/255' -> 0.0313..., '0.5' -> 0.5 (a fraction or a decimal, >= 0)."""
    try:
        value = float(fractions.Fraction(str(spec).strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"eps={spec!r}: a number or a fraction such as 8/255") from None
    if value < 0:
        raise ValueError(f"eps={spec!r} must be >= 0")
    return value


def per_example(v: jax.Array, x: jax.Array) -> jax.Array:
    """[B] -> [B, 1, 1, ...] to broadcast against x."""
    return v.reshape(v.shape + (1,) * (x.ndim - 1))


def where(mask: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Per-example select: a[i] where mask[i], else b[i]."""
    return jnp.where(per_example(mask, a), a, b)


def norms(d: jax.Array, norm: str) -> jax.Array:
    """Per-example norms [B] of the perturbations d [B, ...]."""
    flat = d.reshape(d.shape[0], -1).astype(jnp.float32)
    if norm == "linf":
        return jnp.max(jnp.abs(flat), axis=1)
    return jnp.sqrt(jnp.sum(flat * flat, axis=1))


def unit(g: jax.Array, norm: str) -> jax.Array:
    """The steepest-ascent direction of the norm's unit ball: sign(g) for L-inf, g / ||g||_2
    for L2."""
    if norm == "linf":
        return jnp.sign(g)
    return g / per_example(norms(g, "l2") + TINY, g)


def project(x_adv: jax.Array, x: jax.Array, eps: float, norm: str, lo=0.0, hi=1.0
            ) -> jax.Array:
    """x_adv moved into the eps-ball around x (L-inf: clipped; L2: scaled towards x), then
    into the box [lo, hi]. Clipping into the box only shrinks each coordinate's offset, so the
    result stays in the ball."""
    if norm == "linf":
        x_adv = jnp.clip(x_adv, x - eps, x + eps)
    else:
        d = x_adv - x
        n = norms(d, "l2")
        scale = jnp.where(n > eps, eps / jnp.maximum(n, TINY), 1.0)
        x_adv = x + d * per_example(scale, d)
    return jnp.clip(x_adv, lo, hi)
