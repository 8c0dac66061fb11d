"""Vision Transformer (Dosovitskiy et al. 2021) in Flax Linen: pre-LayerNorm encoder blocks,
class-token or global-average pooling, optional representation layer.

Attention runs through `jax.nn.dot_product_attention`, so a GPU can take cuDNN's fused kernel
(`attention="cudnn"`, bf16). Parameter count of ViT-B/16 with 1000 classes: 86,567,656.
"""

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcls.models.layers import DropPath, classifier, drop_path_rates

dense_init = nn.initializers.xavier_uniform()


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> width features. Same parameters as a stride-p conv
    (kernel [p, p, 3, width]), computed as one matmul, which is faster on every backend."""

    patch_size: int
    width: int
    dtype: Any = jnp.float32
    use_bias: bool = True  # CLIP's patch convolution has none

    @nn.compact
    def __call__(self, x):
        p = self.patch_size
        n, h, w, c = x.shape
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, c, self.width))
        x = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(n, (h // p) * (w // p), p * p * c)
        y = jnp.dot(x.astype(self.dtype), kernel.reshape(-1, self.width).astype(self.dtype))
        if not self.use_bias:
            return y
        return y + self.param("bias", nn.initializers.zeros, (self.width,)).astype(self.dtype)


class Attention(nn.Module):
    """Multi-head self-attention; parameters query/key/value [D, H, D/H] and out [H, D/H, D].
    `bias` (broadcastable to [B, heads, q, k]) is added to the attention logits (Swin's relative
    position bias and shifted-window mask)."""

    num_heads: int
    dropout_rate: float = 0.0
    implementation: str | None = None  # jax.nn.dot_product_attention: None | "xla" | "cudnn"
    dtype: Any = jnp.float32
    out_features: int | None = None  # the output projection's width (default: the input's)

    @nn.compact
    def __call__(self, x, train: bool, bias=None):
        d = x.shape[-1]
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads {self.num_heads}")
        dense = partial(nn.DenseGeneral, features=(self.num_heads, d // self.num_heads),
                        kernel_init=dense_init, dtype=self.dtype)
        q, k, v = (dense(name=name)(x) for name in ("query", "key", "value"))
        if (train and self.dropout_rate > 0) or self.is_mutable_collection("intermediates"):
            # Fused kernels have no attention dropout and never materialise the weights: spell
            # attention out when dropout is asked for, or when the caller collects
            # intermediates (attention rollout reads the sown weights [B, heads, q, k]).
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1]).astype(q.dtype)
            logits = logits if bias is None else logits + bias.astype(logits.dtype)
            weights = jax.nn.softmax(logits.astype(jnp.float32)).astype(self.dtype)
            self.sow("intermediates", "attention_weights", weights)
            weights = nn.Dropout(self.dropout_rate, deterministic=not train)(weights)
            y = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        else:
            bias = None if bias is None else bias.astype(q.dtype)
            y = jax.nn.dot_product_attention(q, k, v, bias, implementation=self.implementation)
        return nn.DenseGeneral(self.out_features or d, axis=(-2, -1), kernel_init=dense_init,
                               dtype=self.dtype, name="out")(y)


def quick_gelu(x):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP models were trained with."""
    return x * jax.nn.sigmoid(1.702 * x)


class Mlp(nn.Module):
    mlp_dim: int
    dropout_rate: float = 0.0
    gelu_approximate: bool = False
    dtype: Any = jnp.float32
    quick_gelu: bool = False  # OpenAI CLIP's activation in place of GELU

    @nn.compact
    def __call__(self, x, train: bool):
        dense = partial(nn.Dense, kernel_init=dense_init, bias_init=nn.initializers.normal(1e-6),
                        dtype=self.dtype)
        y = dense(self.mlp_dim, name="fc1")(x)
        y = quick_gelu(y) if self.quick_gelu else nn.gelu(y, approximate=self.gelu_approximate)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        return dense(x.shape[-1], name="fc2")(y)


class EncoderBlock(nn.Module):
    """x + attn(norm1(x)), then x + mlp(norm2(x)), each branch with dropout and drop-path.
    `bias` is added to the attention logits (CLIP's causal text mask)."""

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-6
    attention: str | None = None
    gelu_approximate: bool = False
    dtype: Any = jnp.float32
    quick_gelu: bool = False

    @nn.compact
    def __call__(self, x, train: bool, bias=None):
        norm = partial(nn.LayerNorm, epsilon=self.layer_norm_eps, dtype=self.dtype)
        drop = partial(nn.Dropout, self.dropout_rate, deterministic=not train)
        y = Attention(self.num_heads, self.attention_dropout_rate, self.attention, self.dtype,
                      name="attn")(norm(name="norm1")(x), train, bias)
        x = x + DropPath(self.drop_path_rate)(drop()(y), train)
        y = Mlp(self.mlp_dim, self.dropout_rate, self.gelu_approximate, self.dtype,
                self.quick_gelu, name="mlp")(norm(name="norm2")(x), train)
        return x + DropPath(self.drop_path_rate)(drop()(y), train)


class ViT(nn.Module):
    """ViT classifier: images NHWC float -> logits [N, num_classes] (float32)."""

    num_classes: int = 1000
    patch_size: int = 16
    width: int = 768  # token features (hidden size)
    depth: int = 12  # encoder blocks
    num_heads: int = 12
    mlp_dim: int = 3072
    pool: str = "token"  # "token": class token | "gap": mean of the patch tokens
    representation_size: int | None = None  # a Dense + tanh before the head (original ViT)
    dropout_rate: float = 0.0  # after attention, inside and after the MLP
    attention_dropout_rate: float = 0.0  # on the attention weights (disables fused kernels)
    drop_path_rate: float = 0.0  # stochastic depth of the last block; linear from 0
    head_dropout_rate: float = 0.0  # on the pooled features, before the head
    layer_norm_eps: float = 1e-6  # 1e-6 as big_vision/timm; Hugging Face ViTs use 1e-12
    attention: str | None = None  # jax.nn.dot_product_attention implementation
    gelu_approximate: bool = False  # tanh GELU, as big_vision trains; exact as HF/timm/torch
    remat: bool = False  # recompute each block in the backward pass (less memory, more compute)
    dtype: Any = jnp.float32  # compute dtype; params stay float32
    pre_norm: bool = False  # a LayerNorm on the embedded tokens before the encoder (CLIP's ln_pre)
    patch_bias: bool = True  # False: a patch embedding without bias (CLIP)
    quick_gelu: bool = False  # x * sigmoid(1.702 x) in the MLPs (OpenAI CLIP) instead of GELU
    projection: int = 0  # CLIP: a bias-free Dense `proj` to this width, then unit length (0: none)

    @property
    def prefix_tokens(self) -> tuple[str, ...]:
        """Names of the learned tokens put before the patch tokens (the class token)."""
        return ("cls",) if self.pool == "token" else ()

    def encode(self, x, train: bool):
        """Images -> the encoder's normalised tokens [N, prefix + patches, width]; called from
        a compact __call__ (the prefix tokens' parameters are named by `prefix_tokens`)."""
        x = PatchEmbed(self.patch_size, self.width, self.dtype, self.patch_bias,
                       name="patch_embed")(x)
        n = x.shape[0]
        tokens = [jnp.broadcast_to(self.param(name, nn.initializers.zeros, (1, 1, self.width))
                                   .astype(self.dtype), (n, 1, self.width))
                  for name in self.prefix_tokens]
        x = jnp.concatenate([*tokens, x], axis=1)
        posemb = self.param("pos_embedding", nn.initializers.normal(0.02),
                            (1, x.shape[1], self.width))
        x = x + posemb.astype(self.dtype)
        if self.pre_norm:
            x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="pre_norm")(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        block = nn.remat(EncoderBlock, static_argnums=(2,)) if self.remat else EncoderBlock
        for i, rate in enumerate(drop_path_rates(self.drop_path_rate, self.depth)):
            x = block(self.num_heads, self.mlp_dim, self.dropout_rate,
                      self.attention_dropout_rate, rate, self.layer_norm_eps, self.attention,
                      self.gelu_approximate, self.dtype, self.quick_gelu,
                      name=f"block{i}")(x, train)
        return nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="encoder_norm")(x)

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.pool not in ("token", "gap"):
            raise ValueError(f"ViT pool must be 'token' or 'gap', got {self.pool!r}")
        x = self.encode(x, train)
        x = x[:, 0] if self.pool == "token" else jnp.mean(x, axis=1)
        if self.representation_size:
            x = jnp.tanh(nn.Dense(self.representation_size, dtype=self.dtype,
                                  name="pre_logits")(x))
        if self.projection:  # CLIP's joint embedding: the head is then a cosine classifier
            x = nn.Dense(self.projection, use_bias=False, dtype=self.dtype, name="proj")(x)
            x = x / jnp.linalg.norm(x.astype(jnp.float32), axis=-1, keepdims=True).astype(x.dtype)
        return classifier(x, self.num_classes, self.head_dropout_rate, train, self.dtype,
                          kernel_init=nn.initializers.zeros)


SIZES = {  # width, depth, heads, mlp_dim
    "ti": (192, 12, 3, 768),
    "s": (384, 12, 6, 1536),
    "b": (768, 12, 12, 3072),
    "l": (1024, 24, 16, 4096),
    "h": (1280, 32, 16, 5120),
}


def vit(size: str, patch_size: int, module: type[ViT] = ViT, **kwargs) -> ViT:
    """ViT-`size`/`patch_size` (a `module`: ViT or a subclass); kwargs override any field."""
    width, depth, heads, mlp_dim = SIZES[size]
    return module(**{"patch_size": patch_size, "width": width, "depth": depth, "num_heads": heads,
                  "mlp_dim": mlp_dim, **kwargs})


MODELS = {f"vit_{s}{p}": partial(vit, s, p) for s, p in (
    ("ti", 16), ("s", 16), ("s", 32), ("b", 16), ("b", 32), ("b", 8), ("l", 16), ("l", 32),
    ("h", 14), ("ti", 4), ("s", 4), ("s", 8))}
# CLIP's image towers as classifiers (fine-tune them from CLIP weights with config.init_from;
# jaxcls/clip has the full two-tower model): ln_pre, no patch bias, QuickGELU, eps 1e-5, and
# the unit-length projection into the joint space before the head (config.init_head=zeroshot
# makes that head CLIP's zero-shot classifier).
CLIP = {"pre_norm": True, "patch_bias": False, "quick_gelu": True, "layer_norm_eps": 1e-5}
MODELS.update({f"clip_vit_{s}{p}": partial(vit, s, patch_size=p, projection=e, **CLIP)
               for s, p, e in (("b", 32, 512), ("b", 16, 512), ("l", 14, 768))})
IMAGE_SIZE = {"vit_ti4": 32, "vit_s4": 32, "vit_s8": 32}  # patch-4/8 ViTs are for 32x32 images


def resize_pos_embedding(posemb: np.ndarray, num_tokens: int, num_prefix: int) -> np.ndarray:
    """Bilinearly resizes a [1, prefix + g*g, D] position embedding to `num_tokens` tokens, for
    fine-tuning at a resolution other than the checkpoint's (e.g. 384 from 224)."""
    prefix, grid = posemb[:, :num_prefix], posemb[0, num_prefix:]
    old, new = int(round(np.sqrt(len(grid)))), int(round(np.sqrt(num_tokens - num_prefix)))
    if old * old != len(grid) or new * new != num_tokens - num_prefix:
        raise ValueError(f"position embedding of {posemb.shape[1]} tokens cannot be resized to "
                         f"{num_tokens}: grids must be square")
    grid = jax.image.resize(grid.reshape(old, old, -1), (new, new, grid.shape[-1]), "bilinear")
    return np.concatenate([prefix, np.asarray(grid).reshape(1, new * new, -1)], axis=1)
