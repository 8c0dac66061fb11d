"""CoAtNet (Dai et al. 2021) in Flax Linen, equal to timm 1.0.31's MaxxVit-based CoAtNets.

A CoAtNet is a two-conv stem (stride 2), two stages of MBConv blocks and two stages of
transformer blocks, each stage halving the resolution in its first block, and a linear head:

- MBConv (pre-norm): shortcut = avg-pool 2x2 + 1x1 conv where the block strides; branch =
  BN (+ act), [avg-pool 2x2], 1x1 expand, BN + act, depthwise 3x3 [stride 2], squeeze-excite,
  BN + act (squeeze-excite before or after that BN), 1x1 project;
- transformer: shortcut = avg-pool 2x2 + 1x1 conv where the block strides; x + attn(pool(LN(x)))
  then x + mlp(LN(x)), attention over every position of the map with a learned relative position
  bias, a table of (2h-1)(2w-1) rows per head for an h x w map: the table's shape is tied to the
  resolution, and the index into it is computed once per shape with numpy.

Variants: `coatnet_0_rw_224` and `coatnet_1_rw_224` are timm's own (Ross Wightman's) models:
SiLU, activation after the pre-norm, expansion from the block input, no bias on the projection
and shortcut convs, squeeze-excite (ReLU) before the second BN, attention width the block
input's; 0_rw downsamples MBConv blocks by pooling, 1_rw by the strided depthwise conv.
`coatnet_0_224` is the paper's layout as timm writes it (GELU, expansion from the output,
biases, attention width the output's, a 768-wide tanh pre-logits head); timm publishes no
weights for it. Parameter names follow timm's modules; depthwise convs go through
models/conv.py's CPU path.
"""

import functools
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcls.models.conv import conv_general_dilated
from jaxcls.models.efficientnet import (
    ACTIVATIONS,
    SqueezeExcite,
    conv_init,
    depthwise_init,
    make_divisible,
)
from jaxcls.models.layers import DropPath, classifier, drop_path_rates
from jaxcls.models.vit import Mlp, dense_init

# The MBConv / stem activations: efficientnet's and exact GELU (the paper's, torch's default).
ACTS = {**ACTIVATIONS, "gelu": partial(nn.gelu, approximate=False)}


@functools.cache
def relative_position_index(h: int, w: int) -> np.ndarray:
    """[h*w, h*w] row of the bias table for each (query, key) pair of an h x w map: the
    offset (dy, dx) in [-(h-1), h-1] x [-(w-1), w-1], row-major over (dy, dx)."""
    coords = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :]  # 2, q, k
    return (rel[0] + h - 1) * (2 * w - 1) + rel[1] + w - 1


class Settings(NamedTuple):
    """The CoAtNet fields its blocks use (see CoAtNet)."""

    act: str
    se_act: str
    pre_norm_act: bool
    expand_output: bool
    output_bias: bool
    stride_mode: str
    attn_early: bool
    expand_first: bool
    shortcut_bias: bool
    dtype: Any


def _pool2(x):
    """timm's 'avg2' downsampling: 2x2 average, stride 2 (floor on odd sizes)."""
    return nn.avg_pool(x, (2, 2), (2, 2))


def _conv(features: int, kernel: int = 1, stride: int = 1, groups: int = 1, bias: bool = False,
          dtype: Any = jnp.float32, name: str | None = None) -> nn.Conv:
    """timm's create_conv2d: symmetric padding ((s - 1) + (k - 1)) // 2."""
    p = ((stride - 1) + (kernel - 1)) // 2
    return nn.Conv(features, (kernel, kernel), stride, padding=((p, p), (p, p)),
                   feature_group_count=groups, use_bias=bias, dtype=dtype,
                   kernel_init=depthwise_init if groups > 1 else conv_init,
                   conv_general_dilated=conv_general_dilated, name=name)


def _shortcut(x, out: int, bias: bool, dtype, stride: int):
    """Identity, or (where the block strides) 2x2 average pool then a 1x1 conv to `out`."""
    if stride == 1:
        return x
    x = _pool2(x)
    return x if x.shape[-1] == out else _conv(out, bias=bias, dtype=dtype,
                                              name="shortcut_expand")(x)


class MBConvBlock(nn.Module):
    """Pre-norm inverted bottleneck (see the module docstring), named as timm's."""

    out: int
    stride: int
    model: Settings
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        m = self.model
        act = ACTS[m.act]
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=m.dtype)
        conv = partial(_conv, dtype=m.dtype)
        shortcut = _shortcut(x, self.out, m.output_bias, m.dtype, self.stride)
        mid = make_divisible((self.out if m.expand_output else x.shape[-1]) * 4)
        y = norm(name="pre_norm")(x)
        y = act(y) if m.pre_norm_act else y
        if m.stride_mode == "pool" and self.stride == 2:
            y = _pool2(y)
        y = act(norm(name="norm1")(conv(mid, name="conv1_1x1")(y)))
        dw_stride = self.stride if m.stride_mode == "dw" else 1
        y = conv(mid, 3, dw_stride, groups=mid, name="conv2_kxk")(y)
        se = SqueezeExcite(int(0.25 * (self.out if m.expand_output else mid)), m.se_act,
                           "sigmoid", m.dtype, name="se_early" if m.attn_early else "se")
        if m.attn_early:
            y = act(norm(name="norm2")(se(y)))
        else:
            y = se(act(norm(name="norm2")(y)))
        y = conv(self.out, bias=m.output_bias, name="conv3_1x1")(y)
        return DropPath(self.drop_path_rate)(y, train) + shortcut


class RelPosAttention(nn.Module):
    """Multi-head self-attention over all h*w positions plus a learned bias per (head, offset).

    qkv: one Dense to 3 * width, laid out head first ([head][q|k|v][dim]) as timm's."""

    width: int  # attention width (heads * head_dim)
    out: int
    head_dim: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, h, w, _ = x.shape
        heads = self.width // self.head_dim
        dense = partial(nn.Dense, kernel_init=dense_init, dtype=self.dtype)
        qkv = dense(3 * self.width, name="qkv")(x).reshape(b, h * w, heads, 3, self.head_dim)
        table = self.param("relative_position_bias_table",
                           nn.initializers.truncated_normal(0.02),
                           ((2 * h - 1) * (2 * w - 1), heads))
        bias = table[relative_position_index(h, w)].transpose(2, 0, 1)  # heads, q, k
        y = jax.nn.dot_product_attention(qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :],
                                         bias=bias[None].astype(self.dtype))
        return dense(self.out, name="proj")(y.reshape(b, h, w, self.width))


class TransformerBlock(nn.Module):
    """shortcut(x) + attn(pool(LN(x))), then x + mlp(LN(x)) (GELU MLP 4x wide)."""

    out: int
    stride: int
    model: Settings
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        m = self.model
        norm = partial(nn.LayerNorm, epsilon=1e-6, dtype=m.dtype)
        shortcut = _shortcut(x, self.out, m.shortcut_bias, m.dtype, self.stride)
        y = norm(name="norm1")(x)
        y = _pool2(y) if self.stride == 2 else y
        y = RelPosAttention(self.out if m.expand_first else x.shape[-1], self.out,
                            dtype=m.dtype, name="attn")(y)
        x = shortcut + DropPath(self.drop_path_rate)(y, train)
        y = Mlp(4 * self.out, dtype=m.dtype, name="mlp")(norm(name="norm2")(x), train)
        return x + DropPath(self.drop_path_rate)(y, train)


class CoAtNet(nn.Module):
    """CoAtNet classifier: images NHWC float -> logits [N, num_classes]."""

    depths: Sequence[int] = (2, 3, 7, 2)
    dims: Sequence[int] = (96, 192, 384, 768)
    block_types: str = "CCTT"  # C: MBConv stage, T: transformer stage
    stem_width: Sequence[int] = (32, 64)
    num_classes: int = 1000
    act: str = "silu"  # MBConv and stem activation: silu (rw) | gelu (paper)
    se_act: str = "relu"  # squeeze-excite activation: relu (rw) | silu
    pre_norm_act: bool = True  # activation after the MBConv pre-norm (rw)
    expand_output: bool = False  # MBConv expansion (and SE) from the output channels (paper)
    output_bias: bool = False  # bias on the MBConv projection and shortcut convs
    stride_mode: str = "pool"  # MBConv downsampling: pool (avg 2x2 first) | dw (strided dw conv)
    attn_early: bool = True  # squeeze-excite before the MBConv's second BN (rw)
    expand_first: bool = False  # attention width the block output's (paper), not its input's
    shortcut_bias: bool = False  # bias on the transformer shortcut conv
    head_hidden: int = 0  # 0: LayerNorm on the map, pool, head; >0: pool, LN, tanh Dense, head
    drop_path_rate: float = 0.0  # stochastic depth of the last block, linear from 0 (timm's)
    head_dropout_rate: float = 0.0  # dropout on the pooled features
    dtype: Any = jnp.float32  # compute dtype; params stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        for field, value, allowed in (("act", self.act, ACTS),
                                      ("se_act", self.se_act, ACTIVATIONS),
                                      ("stride_mode", self.stride_mode, ("pool", "dw"))):
            if value not in allowed:
                raise ValueError(f"CoAtNet {field}={value!r}: use one of {list(allowed)}")
        settings = Settings(*(getattr(self, f) for f in Settings._fields))
        x = x.astype(self.dtype)
        x = _conv(self.stem_width[0], 3, 2, dtype=self.dtype, name="stem_conv1")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name="stem_norm1")(x)
        x = ACTS[self.act](x)
        x = _conv(self.stem_width[1], 3, 1, dtype=self.dtype, name="stem_conv2")(x)
        rates = iter(drop_path_rates(self.drop_path_rate, sum(self.depths)))
        for i, (depth, dim, kind) in enumerate(zip(self.depths, self.dims, self.block_types,
                                                   strict=True)):
            block = MBConvBlock if kind == "C" else TransformerBlock
            for j in range(depth):
                x = block(dim, 2 if j == 0 else 1, settings, next(rates),
                          name=f"stage{i + 1}_block{j + 1}")(x, train)
        norm = partial(nn.LayerNorm, epsilon=1e-6, dtype=self.dtype)
        if self.head_hidden:
            x = norm(name="head_norm")(jnp.mean(x, axis=(1, 2)))
            x = jnp.tanh(nn.Dense(self.head_hidden, kernel_init=dense_init, dtype=self.dtype,
                                  name="pre_logits")(x))
        else:
            x = jnp.mean(norm(name="norm")(x), axis=(1, 2))
        return classifier(x, self.num_classes, self.head_dropout_rate, train, self.dtype)


_RW = {"depths": (2, 3, 7, 2), "stem_width": (32, 64)}
_PAPER = {"stem_width": (64, 64), "act": "gelu", "se_act": "silu", "pre_norm_act": False,
          "expand_output": True, "output_bias": True, "stride_mode": "dw", "attn_early": False,
          "expand_first": True, "shortcut_bias": True, "head_hidden": 768}
VARIANTS = {
    "coatnet_0_rw_224": _RW,
    "coatnet_1_rw_224": {**_RW, "depths": (2, 6, 14, 2), "stride_mode": "dw"},
    "coatnet_0_224": {**_PAPER, "depths": (2, 3, 5, 2)},
}


def coatnet(name: str, **kwargs) -> CoAtNet:
    """The CoAtNet `name` of VARIANTS; kwargs override any CoAtNet field."""
    return CoAtNet(**{**VARIANTS[name], **kwargs})


MODELS = {name: partial(coatnet, name) for name in VARIANTS}


def checkpoint_conventions(model: str, layout: str) -> tuple[dict, dict]:
    """(model fields, preprocessing) of timm's weights: inputs in [-1, 1] (mean = std = 0.5),
    crop 0.95, bicubic, 224 (the bias tables fix the resolution)."""
    return {}, {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_frac": 0.95,
                "interpolation": "bicubic", "image_size": 224}
