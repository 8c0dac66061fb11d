"""Model registry: `config.model` names a constructor; `config.model_kwargs` overrides fields.

Every model maps images NHWC float -> logits [N, num_classes] float32 with
`model.apply(variables, images, train=False)`; its classifier Dense is the top-level `head`
(a distilled DeiT has a second one, `head_dist`: see models/deit.py).
`python -m jaxcls.models` lists them with parameters and GMACs.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from jaxcls.models import (
    airbench,
    alexnet,
    coatnet,
    convnext,
    deit,
    densenet,
    efficientnet,
    inception,
    lenet,
    mobilenet,
    regnet,
    resnet,
    swin,
    vgg,
    vit,
)

# Family name -> its module. Each module exports MODELS (name -> constructor taking
# num_classes and field overrides) and, where some differ from 224, IMAGE_SIZE (name -> the
# resolution the model is usually trained at). A new family is a module and one line here.
FAMILIES = {"resnet": resnet, "vit": vit, "convnext": convnext}
FAMILIES.update(lenet=lenet, alexnet=alexnet, vgg=vgg, inception=inception, densenet=densenet)
FAMILIES.update(efficientnet=efficientnet, mobilenet=mobilenet)
FAMILIES.update(regnet=regnet, coatnet=coatnet)
FAMILIES.update(swin=swin, deit=deit)
FAMILIES.update(airbench=airbench)

MODELS: dict[str, Callable[..., nn.Module]] = {
    name: fn for module in FAMILIES.values() for name, fn in module.MODELS.items()}
_FAMILY_OF = {name: f for f, module in FAMILIES.items() for name in module.MODELS}
DEFAULT_IMAGE_SIZE: dict[str, int] = {
    name: getattr(FAMILIES[f], "IMAGE_SIZE", {}).get(name, 224) for name, f in _FAMILY_OF.items()}


def family(name: str) -> str:
    """The FAMILIES key of a registered model name ("resnet", "vit", ...)."""
    check_name(name)
    return _FAMILY_OF[name]


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
