"""CLIP's image tower RN50 (and its wider kin): OpenAI's ModifiedResNet in Flax Linen.

It differs from torchvision's ResNet in three places: a stem of three 3x3 convolutions ending in
a 2x2 average pool (no max pool); anti-aliased downsampling, a 2x2 average pool before the
strided block's last 1x1 convolution and before its shortcut convolution, which are stride 1;
and attention pooling instead of global average pooling: the mean token is prepended to the
final map's tokens, a position embedding added, and the mean token's output of one multi-head
attention (jaxcls's ViT attention) projected to the joint space. BatchNorm eps 1e-5, ReLU.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcls.models import vit


def _avg_pool(x, k: int):
    return x if k == 1 else nn.avg_pool(x, (k, k), strides=(k, k))


class Bottleneck(nn.Module):
    """1x1, 3x3, [avg pool], 1x1 (4x planes); the shortcut pooled and projected when needed."""

    planes: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv = partial(nn.Conv, use_bias=False, dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=self.dtype)
        y = nn.relu(norm(name="bn1")(conv(self.planes, (1, 1), name="conv1")(x)))
        y = nn.relu(norm(name="bn2")(conv(self.planes, (3, 3), padding=1, name="conv2")(y)))
        y = norm(name="bn3")(conv(4 * self.planes, (1, 1), name="conv3")(
            _avg_pool(y, self.stride)))
        if self.stride > 1 or x.shape[-1] != 4 * self.planes:
            x = norm(name="downsample_bn")(conv(4 * self.planes, (1, 1), name="downsample_conv")(
                _avg_pool(x, self.stride)))
        return nn.relu(y + x)


class AttentionPool(nn.Module):
    """Tokens [N, L, C] -> [N, out_features]: the mean token's multi-head attention output."""

    num_heads: int
    out_features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)
        posemb = self.param("pos_embedding", nn.initializers.normal(x.shape[-1] ** -0.5),
                            x.shape[1:])
        x = x + posemb.astype(x.dtype)
        # Self-attention over all tokens, kept at the mean token: the query CLIP computes.
        return vit.Attention(self.num_heads, dtype=self.dtype, out_features=self.out_features,
                             name="attn")(x, False)[:, 0]


class ModifiedResNetTower(nn.Module):
    """Normalised images NHWC -> image embeddings [N, embed_dim] float32 (not unit length)."""

    stage_sizes: Sequence[int] = (3, 4, 6, 3)  # RN50
    width: int = 64  # stem width; stage i has width * 2**i planes (x4 out)
    num_heads: int = 32  # attention pooling heads (OpenAI: width * 32 // 64)
    embed_dim: int = 1024
    image_size: int = 224  # the resolution its pooling position embedding was trained for
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        w = self.width
        for i, (features, stride) in enumerate(((w // 2, 2), (w // 2, 1), (w, 1)), 1):
            x = nn.Conv(features, (3, 3), strides=stride, padding=1, use_bias=False,
                        dtype=self.dtype, name=f"stem_conv{i}")(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                     dtype=self.dtype, name=f"stem_bn{i}")(x))
        x = _avg_pool(x, 2)
        for stage, blocks in enumerate(self.stage_sizes):
            for b in range(blocks):
                x = Bottleneck(w * 2**stage, 2 if stage and not b else 1, self.dtype,
                               name=f"stage{stage + 1}_block{b + 1}")(x, train)
        n, h, w_, c = x.shape
        x = AttentionPool(self.num_heads, self.embed_dim, self.dtype,
                          name="attnpool")(x.reshape(n, h * w_, c))
        return x.astype(jnp.float32)
