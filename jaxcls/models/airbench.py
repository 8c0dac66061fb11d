"""The airbench94 network (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU").

A frozen 2x2 whitening conv 3 -> 24 (its kernel set from training-image patch statistics by
`jaxcls.models.whitening`, its bias trained) and GELU; three groups of conv3x3 -> maxpool2 ->
BN -> GELU -> conv3x3 -> BN -> GELU (widths 64/256/256, no conv bias, Dirac init); maxpool 3;
a bias-free Dense `head` 256 -> classes whose output is scaled by 1/9. BatchNorm has eps 1e-12,
no scale (airbench freezes it at 1), a trained bias and momentum 0.6 (Flax convention: the
running average keeps 0.6 of its old value). Parameters with 10 classes: 1,971,640 (the
whitening kernel, 288 of them, frozen by the recipe).
"""

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcls.models.conv import conv_general_dilated

# PyTorch's default Conv2d/Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_torch_uniform = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _uniform_std(std: float):
    """Uniform initialiser with standard deviation `std`."""
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -1.0, 1.0) * std * 3**0.5


def dirac_init(key, shape, dtype=jnp.float32):
    """A 3x3 HWIO kernel whose first `in` output channels pass input channel i through unchanged
    (torch.nn.init.dirac_ on w[:in], as airbench), the others PyTorch's default uniform."""
    kh, kw, c_in, c_out = shape
    kernel = _torch_uniform(key, shape, dtype)
    n = min(c_in, c_out)
    identity = jnp.zeros((kh, kw, c_in, n), dtype).at[kh // 2, kw // 2].set(jnp.eye(c_in, n))
    return kernel.at[..., :n].set(identity)


Conv = partial(nn.Conv, kernel_size=(3, 3), padding="SAME", use_bias=False,
               kernel_init=dirac_init, conv_general_dilated=conv_general_dilated)


class ConvGroup(nn.Module):
    """conv -> maxpool 2 -> BN -> GELU -> conv -> BN -> GELU."""

    width: int
    bn_momentum: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                       epsilon=1e-12, use_scale=False, dtype=self.dtype)
        x = Conv(self.width, dtype=self.dtype, name="conv1")(x)
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.gelu(norm(name="norm1")(x), approximate=False)
        x = Conv(self.width, dtype=self.dtype, name="conv2")(x)
        return nn.gelu(norm(name="norm2")(x), approximate=False)


class AirbenchNet(nn.Module):
    """airbench94: images NHWC float, 32x32 -> logits [N, num_classes] (float32)."""

    num_classes: int = 10
    widths: tuple[int, ...] = (64, 256, 256)
    whiten_kernel: int = 2  # whitening patch size; 2 * 3 * k^2 filters (eigenvectors and negatives)
    bn_momentum: float = 0.6
    logit_scale: float = 1 / 9  # the head's output is multiplied by this
    head_std: float = 0.0  # > 0: head kernel uniform with this std (airbench's Muon: 1)
    dtype: Any = jnp.float32  # compute dtype; params stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        k = self.whiten_kernel
        x = nn.Conv(2 * 3 * k * k, (k, k), padding="VALID", dtype=self.dtype,
                    kernel_init=_torch_uniform,
                    bias_init=lambda key, shape, dtype: jax.random.uniform(
                        key, shape, dtype, -1.0, 1.0) / (3 * k * k) ** 0.5,
                    conv_general_dilated=conv_general_dilated, name="whiten")(
                        x.astype(self.dtype))
        x = nn.gelu(x, approximate=False)
        for i, width in enumerate(self.widths):
            x = ConvGroup(width, self.bn_momentum, self.dtype, name=f"group{i + 1}")(x, train)
        x = nn.max_pool(x, (3, 3), (3, 3))
        x = x.reshape(x.shape[0], -1)
        head_init = _uniform_std(self.head_std) if self.head_std > 0 else _torch_uniform
        logits = nn.Dense(self.num_classes, use_bias=False, kernel_init=head_init,
                          dtype=self.dtype, name="head")(x)
        return logits.astype(jnp.float32) * self.logit_scale


MODELS = {"airbench94": AirbenchNet}
IMAGE_SIZE = {"airbench94": 32}
