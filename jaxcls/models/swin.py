"""Swin Transformer (Liu et al. 2021) in Flax Linen, equal to timm 1.0.31's `swin_*` models
(and to Hugging Face's and torchvision's where they agree with timm: see `window_and_shift`).

Feature maps stay NHWC [N, H, W, C] between blocks. Each block runs multi-head attention inside
non-overlapping windows with a learned relative position bias; every second block first rolls
the map by half a window and masks attention between the regions the roll brought together.
As in timm, a map that fits in one window (side <= window) takes the whole map as its window and
is never shifted, and a map not divisible by the window is padded at the bottom/right. Stages
2-4 start with patch merging (2x2 neighbours concatenated in timm's order, LayerNorm, a linear
reduction to twice the width). Windows, masks and relative position indices are NumPy constants
computed at trace time from the shapes, never in the step. Attention goes through
vit.Attention (`jax.nn.dot_product_attention` with the bias and mask as an additive bias).
"""

from functools import cache, partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxcls.models.layers import DropPath, classifier, drop_path_rates
from jaxcls.models.vit import Attention, Mlp, PatchEmbed

MASKED = -100.0  # timm's and the paper's additive mask between regions of a shifted window


def window_and_shift(size: tuple[int, int], window: int, shifted: bool
                     ) -> tuple[tuple[int, int], tuple[int, int]]:
    """(window, shift) per axis for a map of `size` (timm's rule): an axis that fits in one
    window is one whole window and unshifted; otherwise `window`, shifted by window // 2 in the
    shifted blocks. (transformers keeps the configured window's bias table on a smaller map, and
    torchvision pads such a map to a whole window before shifting; all three agree wherever every
    map is a multiple of the window, as Swin-T/S/B at 224.)"""
    win = tuple(r if r <= window else window for r in size)
    shift = tuple(0 if (r <= window or not shifted) else window // 2 for r in size)
    return win, shift


def partition(x, window: tuple[int, int]):
    """[N, H, W, C] -> windows [N * nW, wh * ww, C] (row-major windows, as timm)."""
    n, h, w, c = x.shape
    wh, ww = window
    x = x.reshape(n, h // wh, wh, w // ww, ww, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def unpartition(windows, window: tuple[int, int], h: int, w: int):
    """Inverse of `partition`: [N * nW, wh * ww, C] -> [N, H, W, C]."""
    wh, ww = window
    c = windows.shape[-1]
    x = windows.reshape(-1, h // wh, w // ww, wh, ww, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


@cache  # one per window shape, shared by every block and trace (read only)
def relative_position_index(window: tuple[int, int]) -> np.ndarray:
    """[T, T] index into the [(2wh-1)(2ww-1), heads] bias table of each query-key pair."""
    wh, ww = window
    coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)  # T, T, 2
    index = (rel[..., 0] + wh - 1) * (2 * ww - 1) + rel[..., 1] + ww - 1
    index.setflags(write=False)
    return index


@cache  # one per map, window and shift (read only)
def shift_mask(size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]
               ) -> np.ndarray:
    """[nW, T, T] additive mask (0 or MASKED) of the shifted windows of a padded map `size`:
    tokens of different regions of the rolled map do not attend to each other."""
    img = np.zeros(size, np.float32)
    regions = [[(0, -w), (-w, -s), (-s, None)] for w, s in zip(window, shift, strict=True)]
    for i, (h0, h1) in enumerate(regions[0]):
        for j, (w0, w1) in enumerate(regions[1]):
            img[h0:h1, w0:w1] = 3 * i + j  # the same slices as timm, for identical regions
    ids = partition(img[None, :, :, None], window)[..., 0]  # nW, T
    mask = np.where(ids[:, None, :] != ids[:, :, None], MASKED, 0.0).astype(np.float32)
    mask.setflags(write=False)
    return mask


class SwinBlock(nn.Module):
    """x + window_attention(norm1(x)), then x + mlp(norm2(x)) on a map [N, H, W, C]."""

    num_heads: int
    window: tuple[int, int]  # resolved for this map (window_and_shift)
    shift: tuple[int, int]
    mlp_ratio: float = 4.0
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-5
    attention: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        n, h, w, c = x.shape
        norm = partial(nn.LayerNorm, epsilon=self.layer_norm_eps, dtype=self.dtype)
        drop = partial(nn.Dropout, self.dropout_rate, deterministic=not train)
        (wh, ww), (sh, sw) = self.window, self.shift
        y = norm(name="norm1")(x)
        y = jnp.roll(y, (-sh, -sw), axis=(1, 2)) if sh or sw else y
        hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
        y = jnp.pad(y, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
        table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                           ((2 * wh - 1) * (2 * ww - 1), self.num_heads))
        bias = table[relative_position_index(self.window)].transpose(2, 0, 1)[None]  # 1,H,T,T
        if sh or sw:
            mask = shift_mask((hp, wp), self.window, self.shift)  # nW, T, T
            bias = jnp.broadcast_to(bias + mask[:, None], (n, len(mask), *bias.shape[1:]))
            bias = bias.reshape(-1, *bias.shape[2:])  # (N * nW), H, T, T
        y = Attention(self.num_heads, self.attention_dropout_rate, self.attention, self.dtype,
                      name="attn")(partition(y, self.window), train, bias)
        y = unpartition(y, self.window, hp, wp)[:, :h, :w]
        y = jnp.roll(y, (sh, sw), axis=(1, 2)) if sh or sw else y
        x = x + DropPath(self.drop_path_rate)(drop()(y), train)
        y = Mlp(int(c * self.mlp_ratio), self.dropout_rate, dtype=self.dtype,
                name="mlp")(norm(name="norm2")(x), train)
        return x + DropPath(self.drop_path_rate)(drop()(y), train)


class PatchMerging(nn.Module):
    """[N, H, W, C] -> [N, ceil(H/2), ceil(W/2), out]: each 2x2 neighbourhood concatenated as
    (0,0), (1,0), (0,1), (1,1) (row, column offsets: timm's and Hugging Face's order), then
    LayerNorm and a linear map without bias."""

    features: int
    layer_norm_eps: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        n, h, w, c = x.shape
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        h, w = x.shape[1] // 2, x.shape[2] // 2
        x = x.reshape(n, h, 2, w, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(n, h, w, 4 * c)
        x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="norm")(x)
        return nn.Dense(self.features, use_bias=False, dtype=self.dtype, name="reduction")(x)


class Swin(nn.Module):
    """Swin classifier: images NHWC float -> logits [N, num_classes] (float32)."""

    num_classes: int = 1000
    patch_size: int = 4
    embed_dim: int = 96  # width of stage 1; doubles at each later stage
    depths: tuple[int, ...] = (2, 2, 6, 2)  # blocks per stage
    num_heads: tuple[int, ...] = (3, 6, 12, 24)  # per stage
    window_size: int = 7
    mlp_ratio: float = 4.0
    dropout_rate: float = 0.0  # after attention, inside and after the MLP (timm's proj_drop)
    attention_dropout_rate: float = 0.0  # on the attention weights (disables fused kernels)
    drop_path_rate: float = 0.0  # stochastic depth of the last block; linear from 0 over all
    head_dropout_rate: float = 0.0  # on the pooled features, before the head
    layer_norm_eps: float = 1e-5  # torch's LayerNorm default, as timm and Hugging Face
    attention: str | None = None  # jax.nn.dot_product_attention implementation
    remat: bool = False  # recompute each block in the backward pass (less memory, more compute)
    dtype: Any = jnp.float32  # compute dtype; params stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"Swin depths {self.depths} and num_heads {self.num_heads} differ "
                             f"in length")
        n, h, w, _ = x.shape
        p = self.patch_size
        x = PatchEmbed(p, self.embed_dim, self.dtype, name="patch_embed")(x)
        x = x.reshape(n, h // p, w // p, self.embed_dim)
        x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="patch_norm")(x)
        block = nn.remat(SwinBlock, static_argnums=(2,)) if self.remat else SwinBlock
        rates = iter(drop_path_rates(self.drop_path_rate, sum(self.depths)))
        for s, (depth, heads) in enumerate(zip(self.depths, self.num_heads, strict=True)):
            if s:
                x = PatchMerging(self.embed_dim * 2**s, self.layer_norm_eps, self.dtype,
                                 name=f"stage{s + 1}_downsample")(x)
            for b in range(depth):
                window, shift = window_and_shift(x.shape[1:3], self.window_size, b % 2 == 1)
                x = block(heads, window, shift, self.mlp_ratio, self.dropout_rate,
                          self.attention_dropout_rate, next(rates), self.layer_norm_eps,
                          self.attention, self.dtype, name=f"stage{s + 1}_block{b + 1}")(x, train)
        # The last norm keeps the map [N, h, w, C]: Grad-CAM's default layer (jaxcls.explain).
        x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="norm")(x)
        return classifier(jnp.mean(x, axis=(1, 2)), self.num_classes, self.head_dropout_rate,
                          train, self.dtype)


SIZES = {  # embed_dim, depths, num_heads
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
}


def swin(size: str, **kwargs) -> Swin:
    """Swin-`size` (tiny, small, base) with 4x4 patches and 7x7 windows; kwargs override fields."""
    dim, depths, heads = SIZES[size]
    return Swin(**{"embed_dim": dim, "depths": depths, "num_heads": heads, **kwargs})


MODELS = {f"swin_{size}_patch4_window7_224": partial(swin, size) for size in SIZES}


def checkpoint_conventions(model: str, layout: str) -> tuple[dict, dict]:
    """(model fields, preprocessing) of Swin checkpoints: ImageNet mean/std, bicubic resizing at
    224; timm's crop 0.9, torchvision's 224 of 232 (Hugging Face folders: their json's)."""
    crop = 224 / 232 if layout == "torchvision" else 0.9
    return {}, {"crop_frac": crop, "interpolation": "bicubic", "image_size": 224}
