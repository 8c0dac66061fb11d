"""CLIP (Radford et al. 2021) in Flax Linen: a ViT image tower and a causal text transformer,
each projected into one embedding space, and the learned temperature `logit_scale`.

The image tower is jaxcls's ViT (models/vit.py) with CLIP's differences switched on: a
LayerNorm before the encoder (`ln_pre`), no patch bias, LayerNorm epsilon 1e-5, QuickGELU for
OpenAI's weights, and the class token's final features times `proj` (no bias). The text tower
embeds BPE ids, runs the same encoder blocks under a causal mask, and takes the features at
the end-of-text token (the largest id of each row) after `ln_final`, times `text_projection`.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcls.clip import resnet
from jaxcls.models import vit

LAYER_NORM_EPS = vit.CLIP["layer_norm_eps"]  # torch's LayerNorm default, which CLIP uses


class ImageTower(vit.ViT):
    """Normalised images NHWC -> image embeddings [N, embed_dim] float32 (not unit length)."""

    embed_dim: int = 512  # the joint embedding space
    image_size: int = 224  # the input resolution its position embedding was trained for
    # ViT fields as CLIP sets them (the classifier `num_classes` is unused here)
    pre_norm: bool = vit.CLIP["pre_norm"]
    patch_bias: bool = vit.CLIP["patch_bias"]
    quick_gelu: bool = vit.CLIP["quick_gelu"]
    layer_norm_eps: float = vit.CLIP["layer_norm_eps"]

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = self.encode(x, train)[:, 0]  # encoder_norm is per token: CLIP's ln_post on the cls
        return nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype,
                        name="proj")(x).astype(jnp.float32)


def causal_bias(length: int, dtype) -> jax.Array:
    """[1, 1, L, L] attention-logit bias: 0 where a token may look (itself and before), the
    dtype's most negative value elsewhere."""
    allowed = jnp.tril(jnp.ones((length, length), bool))
    return jnp.where(allowed, 0.0, jnp.finfo(dtype).min).astype(dtype)[None, None]


class TextTower(nn.Module):
    """BPE ids [N, L] int (L <= context_length, 0-padded after end-of-text) -> text embeddings
    [N, embed_dim] float32 (not unit length)."""

    vocab_size: int = 49408
    context_length: int = 77  # positions of the position embedding
    width: int = 512
    depth: int = 12
    num_heads: int = 8
    mlp_dim: int = 2048
    embed_dim: int = 512
    quick_gelu: bool = True  # OpenAI's weights; open_clip's LAION models use exact GELU
    layer_norm_eps: float = LAYER_NORM_EPS
    attention: str | None = None  # jax.nn.dot_product_attention implementation
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        n, length = tokens.shape
        if length > self.context_length:
            raise ValueError(f"{length} tokens per text; this text tower has "
                             f"{self.context_length} positions")
        x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                     dtype=self.dtype, name="token_embedding")(tokens)
        posemb = self.param("pos_embedding", nn.initializers.normal(0.01),
                            (self.context_length, self.width))
        x = x + posemb[:length].astype(self.dtype)
        bias = causal_bias(length, self.dtype)
        for i in range(self.depth):
            x = vit.EncoderBlock(self.num_heads, self.mlp_dim,
                                 layer_norm_eps=self.layer_norm_eps, attention=self.attention,
                                 dtype=self.dtype, quick_gelu=self.quick_gelu,
                                 name=f"block{i}")(x, train, bias)
        x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="encoder_norm")(x)
        x = x[jnp.arange(n), jnp.argmax(tokens, axis=-1)]  # end-of-text has the largest id
        return nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype,
                        name="proj")(x).astype(jnp.float32)


def unit(x: jax.Array) -> jax.Array:
    """Rows scaled to unit L2 norm."""
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class CLIP(nn.Module):
    """The two towers and `logit_scale`; params {image: ..., text: ..., logit_scale: []}.

    `apply(v, images, tokens)` -> logits per image [N_images, N_texts] (exp(logit_scale) times
    the cosine similarities); `method="encode_image"` / `"encode_text"` for one tower."""

    image: nn.Module  # ImageTower, or resnet.ModifiedResNetTower (RN50)
    text: TextTower

    def setup(self):
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(1 / 0.07)),
                                      ())

    def encode_image(self, images, train: bool = False):
        return self.image(images, train)

    def encode_text(self, tokens, train: bool = False):
        return self.text(tokens, train)

    def __call__(self, images, tokens, train: bool = False):
        image, text = unit(self.encode_image(images, train)), unit(self.encode_text(tokens, train))
        return jnp.exp(self.logit_scale) * image @ text.T


# name -> (embed_dim, image tower (patch, width, depth, heads), text tower (width, depth, heads));
# "RN50" (ModifiedResNet, jaxcls/clip/resnet.py) is built by `create` too.
CONFIGS = {
    "ViT-B-32": (512, (32, 768, 12, 12), (512, 12, 8)),
    "ViT-B-16": (512, (16, 768, 12, 12), (512, 12, 8)),
    "ViT-L-14": (768, (14, 1024, 24, 16), (768, 12, 12)),
}


def create(name: str, quick_gelu: bool = True, dtype: Any = jnp.float32, **text_kwargs) -> CLIP:
    """CLIP `name` (a CONFIGS key or RN50), as OpenAI trained them at 224 px: MLPs 4x wide, a
    77-token context, a 49,408-id vocabulary. `quick_gelu=False` for open_clip's GELU models."""
    if name == "RN50":
        text = TextTower(embed_dim=1024, quick_gelu=quick_gelu, dtype=dtype, **text_kwargs)
        return CLIP(resnet.ModifiedResNetTower(dtype=dtype), text)
    if name not in CONFIGS:
        raise ValueError(f"CLIP model {name!r} is unknown; known: {sorted(CONFIGS)}, RN50")
    embed, (patch, width, depth, heads), (t_width, t_depth, t_heads) = CONFIGS[name]
    image = ImageTower(patch_size=patch, width=width, depth=depth, num_heads=heads,
                       mlp_dim=4 * width, embed_dim=embed, quick_gelu=quick_gelu, dtype=dtype)
    text = TextTower(width=t_width, depth=t_depth, num_heads=t_heads, mlp_dim=4 * t_width,
                     embed_dim=embed, quick_gelu=quick_gelu, dtype=dtype, **text_kwargs)
    return CLIP(image, text)


class ZeroShotClassifier(nn.Module):
    """Images -> logits [N, num_classes]: exp(logit_scale) times the cosine similarity of the
    image embedding with each class's text embedding. Params {image: the image tower's,
    classes: [embed_dim, num_classes] unit columns (zeroshot.text_classifier), logit_scale}."""

    image: nn.Module  # an image tower with `embed_dim`
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        classes = self.param("classes", nn.initializers.zeros,
                             (self.image.embed_dim, self.num_classes))
        logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(1 / 0.07)), ())
        return jnp.exp(logit_scale) * unit(self.image(x, train)) @ classes
