"""Model registry: `config.model` names a constructor; `config.model_kwargs` overrides fields.

Every model maps images NHWC float -> logits [N, num_classes] float32 with
`model.apply(variables, images, train=False)`; its classifier Dense is the top-level `head`.
`python -m jaxcls.models` lists them with parameters and GMACs.
"""

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn

from jaxcls.models import convnext, resnet, vit

MODELS: dict[str, Callable[..., nn.Module]] = {
    **{f"resnet{d}": partial(resnet.resnet, d) for d in (18, 34, 50, 101, 152)},
    **{f"vit_{s}{p}": partial(vit.vit, s, p) for s, p in (
        ("ti", 16), ("s", 16), ("s", 32), ("b", 16), ("b", 32), ("b", 8), ("l", 16), ("l", 32),
        ("h", 14), ("ti", 4), ("s", 4), ("s", 8))},
    **{f"convnext_{s}": partial(convnext.convnext, s) for s in convnext.SIZES},
}

# The resolution each model is usually trained at (patch-4/8 ViTs are for 32x32 images).
DEFAULT_IMAGE_SIZE = {name: 32 if name in ("vit_ti4", "vit_s4", "vit_s8") else 224
                      for name in MODELS}


def family(name: str) -> str:
    """"resnet" | "vit" | "convnext" for a registered model name."""
    check_name(name)
    return name.split("_")[0].rstrip("0123456789")


def check_name(name: str) -> None:
    """Raises ValueError naming `name` unless it is registered."""
    if name not in MODELS:
        raise ValueError(f"config.model={name!r} is unknown; registered: {sorted(MODELS)}")


def create(name: str, num_classes: int, dtype: Any = None, **kwargs) -> nn.Module:
    """Builds registered model `name` with `num_classes` outputs (and compute `dtype`, if given)."""
    check_name(name)
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        return MODELS[name](num_classes=num_classes, **kwargs)
    except TypeError as e:  # a bad key in config.model_kwargs
        raise ValueError(f"config.model_kwargs for {name!r}: {e}") from None
