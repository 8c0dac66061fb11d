"""ConvNeXt (Liu et al. 2022) in Flax Linen: patchify stem, 7x7 depthwise conv, LayerNorm,
inverted bottleneck with GELU, layer scale and stochastic depth.

Parameter count of ConvNeXt-T with 1000 classes: 28,589,128.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcls.models.conv import conv_general_dilated
from jaxcls.models.layers import DropPath, classifier, drop_path_rates

init = nn.initializers.truncated_normal(0.02)
Conv = partial(nn.Conv, kernel_init=init, conv_general_dilated=conv_general_dilated)


class Block(nn.Module):
    """x + drop_path(layer_scale * fc2(gelu(fc1(norm(dwconv7x7(x))))))."""

    drop_path_rate: float = 0.0
    layer_scale_init: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        y = Conv(c, (7, 7), padding=3, feature_group_count=c, dtype=self.dtype,
                 name="dwconv")(x)
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(y)
        y = nn.gelu(nn.Dense(4 * c, kernel_init=init, dtype=self.dtype, name="fc1")(y),
                    approximate=False)
        y = nn.Dense(c, kernel_init=init, dtype=self.dtype, name="fc2")(y)
        if self.layer_scale_init > 0:
            scale = self.param("layer_scale", nn.initializers.constant(self.layer_scale_init),
                               (c,))
            y = y * scale.astype(self.dtype)
        return x + DropPath(self.drop_path_rate)(y, train)


class ConvNeXt(nn.Module):
    """ConvNeXt classifier: images NHWC float -> logits [N, num_classes] (float32)."""

    num_classes: int = 1000
    depths: Sequence[int] = (3, 3, 9, 3)  # blocks per stage
    dims: Sequence[int] = (96, 192, 384, 768)  # channels per stage
    stem_patch: int = 4  # the stem is a stem_patch x stem_patch conv with the same stride
    drop_path_rate: float = 0.0  # stochastic depth of the last block; linear from 0
    layer_scale_init: float = 1e-6  # initial layer scale (0: no layer scale)
    head_dropout_rate: float = 0.0  # on the pooled features, before the head
    dtype: Any = jnp.float32  # compute dtype; params stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = partial(nn.LayerNorm, epsilon=1e-6, dtype=self.dtype)
        p = self.stem_patch
        x = Conv(self.dims[0], (p, p), p, padding="VALID", dtype=self.dtype,
                 name="stem_conv")(x.astype(self.dtype))
        x = norm(name="stem_norm")(x)
        rates = iter(drop_path_rates(self.drop_path_rate, sum(self.depths)))
        for i, (depth, dim) in enumerate(zip(self.depths, self.dims, strict=True)):
            if i > 0:
                x = norm(name=f"stage{i + 1}_downsample_norm")(x)
                x = Conv(dim, (2, 2), 2, padding="VALID", dtype=self.dtype,
                         name=f"stage{i + 1}_downsample_conv")(x)
            for j in range(depth):
                x = Block(next(rates), self.layer_scale_init, self.dtype,
                          name=f"stage{i + 1}_block{j + 1}")(x, train)
        x = norm(name="head_norm")(jnp.mean(x, axis=(1, 2)))
        return classifier(x, self.num_classes, self.head_dropout_rate, train, self.dtype,
                          kernel_init=init)


SIZES = {  # depths, dims
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
}


def convnext(size: str, **kwargs) -> ConvNeXt:
    """ConvNeXt-`size`; kwargs override any ConvNeXt field."""
    depths, dims = SIZES[size]
    return ConvNeXt(**{"depths": depths, "dims": dims, **kwargs})


MODELS = {f"convnext_{s}": partial(convnext, s) for s in SIZES}
