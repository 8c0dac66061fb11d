"""Pieces shared by the model families: stochastic depth and the classifier head."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class DropPath(nn.Module):
    """Stochastic depth: zeroes a residual branch for a random subset of examples in training,
    scaling the kept ones by 1 / keep (Huang et al. 2016). Uses the 'dropout' rng."""

    rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) *
                                    (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def classifier(x, num_classes: int, dropout_rate: float, train: bool, dtype,
               kernel_init: nn.initializers.Initializer | None = None, name: str = "head"):
    """Dropout on the pooled features, then the Dense named `head` (the part a fine-tune replaces;
    `name` for a second classifier such as DeiT's `head_dist`); called inside a model's compact
    __call__, so the head sits at the top of its params."""
    x = nn.Dropout(dropout_rate, deterministic=not train)(x)
    return nn.Dense(num_classes, kernel_init=kernel_init or nn.initializers.lecun_normal(),
                    dtype=dtype,
                    name=name)(x).astype(jnp.float32)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic-depth rate of each of `depth` blocks: linear from 0 to `rate` (as DeiT/timm)."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]
