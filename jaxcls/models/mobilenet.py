"""MobileNetV2 (Sandler et al. 2018) and MobileNetV3 (Howard et al. 2019), equal to timm 1.0.31.

Both are built by models/efficientnet.py's module from timm's block strings: V2 from ds / ir
blocks with ReLU6 and no squeeze-excite; V3 with hard-swish (ReLU in the early `_nre` blocks),
squeeze-excite after the depthwise conv reduced from the expanded channels (rounded to 8s, ReLU,
hard-sigmoid gate), a last 1x1 conv stage, and the `conv_head` (1x1 conv with bias +
hard-swish) after the global pool. `tf_` variants: TensorFlow's SAME padding and BN eps 1e-3.
"""

from functools import partial

from jaxcls.models.efficientnet import TF, EfficientNet, decode, make_divisible

_V2 = (("ds_r1_k3_s1_c16",), ("ir_r2_k3_s2_e6_c24",), ("ir_r3_k3_s2_e6_c32",),
       ("ir_r4_k3_s2_e6_c64",), ("ir_r3_k3_s1_e6_c96",), ("ir_r3_k3_s2_e6_c160",),
       ("ir_r1_k3_s1_e6_c320",))
_V3 = {
    "large": ((("ds_r1_k3_s1_e1_c16_nre",),
               ("ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"),
               ("ir_r3_k5_s2_e3_c40_se0.25_nre",),
               ("ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"),
               ("ir_r2_k3_s1_e6_c112_se0.25",), ("ir_r3_k5_s2_e6_c160_se0.25",),
               ("cn_r1_k1_s1_c960",)), 1280),
    "small": ((("ds_r1_k3_s2_e1_c16_se0.25_nre",),
               ("ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"),
               ("ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"),
               ("ir_r2_k5_s1_e3_c48_se0.25",), ("ir_r3_k5_s2_e6_c96_se0.25",),
               ("cn_r1_k1_s1_c576",)), 1024),
}


def mobilenetv2(width: float = 1.0, tf: bool = False, **kwargs) -> EfficientNet:
    """MobileNetV2 with channels scaled by `width` (head at least 1280 wide)."""
    fields = {"stages": decode(_V2, width), "stem_channels": make_divisible(32 * width),
              "head_channels": max(1280, make_divisible(1280 * width)), "act": "relu6",
              **(TF if tf else {})}
    return EfficientNet(**{**fields, **kwargs})


def mobilenetv3(size: str, width: float = 1.0, tf: bool = False, **kwargs) -> EfficientNet:
    """MobileNetV3-Large or -Small (`size`) with channels scaled by `width`."""
    arch, head = _V3[size]
    fields = {"stages": decode(arch, width),
              "stem_channels": 16 if width < 0.75 else make_divisible(16 * width),
              "head_channels": head, "act": "hard_swish", "se_style": "mobilenetv3",
              "head_style": "pool_conv", **(TF if tf else {})}
    return EfficientNet(**{**fields, **kwargs})


MODELS = {
    "mobilenetv2_100": mobilenetv2,
    **{f"{prefix}mobilenetv3_{size}_100": partial(mobilenetv3, size, tf=prefix == "tf_")
       for prefix in ("", "tf_") for size in _V3},
}


def checkpoint_conventions(model: str, layout: str) -> tuple[dict, dict]:
    """(model fields, preprocessing) that `layout` weights for `model` imply: torchvision's
    MobileNetV3 uses BN eps 1e-3 and bilinear resizing; TF's weights take inputs in [-1, 1]."""
    if layout == "torchvision":
        return {"bn_eps": 1e-3}, {"crop_frac": 0.875, "interpolation": "bilinear",
                                  "image_size": 224}
    pre = {"crop_frac": 0.875, "interpolation": "bicubic", "image_size": 224}
    if model.startswith("tf_"):
        pre.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return {}, pre
