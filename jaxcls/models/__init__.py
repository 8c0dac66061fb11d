"""Model registry: `config.model` names a constructor; `config.model_kwargs` overrides fields."""

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn

from jaxcls.models import resnet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": partial(resnet.resnet, 18),
    "resnet34": partial(resnet.resnet, 34),
    "resnet50": partial(resnet.resnet, 50),
    "resnet101": partial(resnet.resnet, 101),
    "resnet152": partial(resnet.resnet, 152),
}

# Names configs may use before their family lands: fail with a pointer, not a KeyError.
COMING = {
    "vit_b16": "ViT arrives with the model issue (ViT/ConvNeXt); until then use a ResNet.",
}


def check_name(name: str) -> None:
    """Raises ValueError naming `name` unless it is registered."""
    if name in COMING:
        raise ValueError(f"config.model={name!r} is not available yet: {COMING[name]}")
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
