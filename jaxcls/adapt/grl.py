"""The gradient reversal layer of DANN (Ganin & Lempitsky 2015) and its lambda schedule."""

import jax
import jax.numpy as jnp


@jax.custom_vjp
def reverse_gradient(x: jax.Array, lam: jax.Array) -> jax.Array:
    """Identity forward; backward multiplies the upstream gradient by -lam (no gradient to
    lam). The features' extractor then ascends the domain classifier's loss."""
    return x


def _forward(x, lam):
    return x, lam


def _backward(lam, g):
    return (jax.tree.map(lambda t: -lam * t, g), jnp.zeros_like(lam))


reverse_gradient.defvjp(_forward, _backward)


def dann_lambda(progress: jax.Array, gamma: float = 10.0) -> jax.Array:
    """2 / (1 + exp(-gamma p)) - 1 for training progress p in [0, 1] (the DANN paper's ramp from
    0 to ~1, which keeps the domain classifier's noisy early gradients away from the features)."""
    return 2.0 / (1.0 + jnp.exp(-gamma * progress)) - 1.0
