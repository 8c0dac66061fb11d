"""EfficientNet (Tan & Le 2019) and EfficientNet-Lite in Flax Linen, equal to timm 1.0.31.

A network is a stem conv, stages of blocks and a head (`Block` below):

- `ds`: depthwise-separable: depthwise kxk + BN + act, optional squeeze-excite, 1x1 + BN;
- `ir`: inverted residual (MBConv): 1x1 expand + BN + act, depthwise kxk + BN + act,
  optional squeeze-excite, 1x1 project + BN;
- `cn`: 1x1 conv + BN + act (MobileNetV3's last stage);

each with a residual (and stochastic depth) when stride is 1 and channels are kept. The same
module builds MobileNetV2/V3 (jaxcls/models/mobilenet.py), as timm does.

Variants follow timm: `efficientnet_b0..b7` (symmetric padding, BN eps 1e-5, SiLU, SE reduced
from the block's input channels), `tf_efficientnet_*` (TensorFlow's SAME padding, BN eps 1e-3,
for weights ported from TF), `efficientnet_lite0..4` (no SE, ReLU6, stem and head widths fixed,
first and last stage never repeated). Parameter names follow timm's modules (`conv_dw`, `bn1`,
`se/conv_reduce`, ...) under `stem_conv`, `stage{S}_block{B}`, `head_conv` and the classifier
`head`. Depthwise convolutions go through models/conv.py's CPU path.
"""

import math
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from jaxcls.models.conv import conv_general_dilated
from jaxcls.models.layers import DropPath, classifier


class Block(NamedTuple):
    """One block of a stage (timm's arch strings, e.g. 'ir_r2_k3_s2_e6_c24_se0.25')."""

    kind: str  # ds | ir | cn
    kernel: int  # depthwise kernel size (cn: the conv's)
    stride: int
    expand: float  # ir: mid channels = make_divisible(in * expand)
    out: int  # output channels
    se: float = 0.0  # squeeze-excite ratio (0: none)
    act: str = ""  # activation of this block ("": the model's)


def make_divisible(v: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Nearest multiple of `divisor` to v, never below divisor nor 10% below v (timm's)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < round_limit * v else new_v


ACTIVATIONS = {"silu": nn.silu, "relu": nn.relu, "relu6": nn.relu6,
               "hard_swish": nn.hard_swish}
GATES = {"sigmoid": nn.sigmoid, "hard_sigmoid": nn.hard_sigmoid}

# timm's init: convs normal(0, sqrt(2 / fan_out)) with fan_out = k*k*out/groups (for a
# depthwise kernel [k, k, 1, C] that is flax's fan_in). The classifier keeps jaxcls' LeCun
# normal rather than timm's uniform(+-1/sqrt(classes)), whose logits on 1280 features start
# with a spread of several units when there are few classes (a new head for transfer).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
depthwise_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class Settings(NamedTuple):
    """The model fields every block uses."""

    act: str
    se_style: str
    padding: str
    bn_eps: float
    bn_momentum: float
    dtype: Any


class _Ops(NamedTuple):
    conv: Any
    norm: Any
    act: Any


def _ops(model: Settings, train: bool, act: str) -> _Ops:
    """Conv, BatchNorm and activation with the model's padding, BN and dtype settings."""

    def conv(features, kernel=1, stride=1, groups=1, name=None):
        if model.padding == "same":
            pad = "SAME"
        else:  # timm's symmetric padding ((s - 1) + (k - 1)) // 2 per side
            p = ((stride - 1) + (kernel - 1)) // 2
            pad = ((p, p), (p, p))
        return nn.Conv(features, (kernel, kernel), stride, padding=pad,
                       feature_group_count=groups, use_bias=False, dtype=model.dtype,
                       kernel_init=depthwise_init if groups > 1 else conv_init,
                       conv_general_dilated=conv_general_dilated, name=name)

    norm = partial(nn.BatchNorm, use_running_average=not train, momentum=model.bn_momentum,
                   epsilon=model.bn_eps, dtype=model.dtype)
    return _Ops(conv, norm, ACTIVATIONS[act or model.act])


class SqueezeExcite(nn.Module):
    """x * gate(expand(act(reduce(mean over h, w of x)))); 1x1 convs with biases."""

    reduced: int
    act: str
    gate: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        conv = partial(nn.Conv, kernel_size=(1, 1), kernel_init=conv_init, dtype=self.dtype)
        s = ACTIVATIONS[self.act](conv(self.reduced, name="conv_reduce")(s))
        s = conv(x.shape[-1], name="conv_expand")(s)
        return x * GATES[self.gate](s)


class MBBlock(nn.Module):
    """A ds / ir / cn block (see the module docstring), named as timm's."""

    block: Block
    model: Settings  # the parent EfficientNet's padding, BN, activation and SE settings
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        b, m = self.block, self.model
        ops = _ops(m, train, b.act)
        c_in = x.shape[-1]
        if b.kind == "cn":
            return ops.act(ops.norm(name="bn1")(ops.conv(b.out, b.kernel, b.stride,
                                                         name="conv")(x)))
        y, mid = x, c_in
        if b.kind == "ir":
            mid = make_divisible(c_in * b.expand)
            y = ops.act(ops.norm(name="bn1")(ops.conv(mid, name="conv_pw")(y)))
        bn = iter(("bn2", "bn3") if b.kind == "ir" else ("bn1", "bn2"))
        y = ops.conv(mid, b.kernel, b.stride, groups=mid, name="conv_dw")(y)
        y = ops.act(ops.norm(name=next(bn))(y))
        if b.se:
            if m.se_style == "mobilenetv3":  # from the expanded channels, rounded to 8s
                reduced, se_act, gate = make_divisible(mid * b.se), "relu", "hard_sigmoid"
            else:  # EfficientNet: ratio of the block's input channels
                reduced = round(mid * (b.se / (b.expand if b.kind == "ir" else 1.0)))
                se_act, gate = b.act or m.act, "sigmoid"
            y = SqueezeExcite(reduced, se_act, gate, m.dtype, name="se")(y)
        y = ops.conv(b.out, name="conv_pwl" if b.kind == "ir" else "conv_pw")(y)
        y = ops.norm(name=next(bn))(y)
        if b.stride == 1 and c_in == b.out:
            y = DropPath(self.drop_path_rate)(y, train) + x
        return y


class EfficientNet(nn.Module):
    """Images NHWC float -> logits [N, num_classes], for EfficientNet/-Lite and MobileNetV2/V3.

    head_style "conv_bn": 1x1 conv + BN + act, then global average pool (EfficientNet, V2);
    "pool_conv": pool, then a 1x1 conv with bias + act (MobileNetV3's conv_head, here a Dense)."""

    stages: Sequence[Sequence[Block]]
    stem_channels: int = 32
    head_channels: int = 1280
    num_classes: int = 1000
    act: str = "silu"  # silu | relu | relu6 | hard_swish
    se_style: str = "efficientnet"  # efficientnet | mobilenetv3 (see MBBlock)
    head_style: str = "conv_bn"  # conv_bn | pool_conv
    padding: str = "symmetric"  # symmetric (timm / torchvision) | same (TensorFlow's SAME)
    bn_eps: float = 1e-5  # 1e-3 for weights trained in TensorFlow
    bn_momentum: float = 0.9  # flax convention (torch's 0.1)
    drop_path_rate: float = 0.0  # stochastic depth of the last block, linear from 0 (timm's)
    head_dropout_rate: float = 0.2  # dropout before the classifier (the paper's, per variant)
    dtype: Any = jnp.float32  # compute dtype; params stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        for field, value, allowed in (("act", self.act, ACTIVATIONS),
                                      ("se_style", self.se_style, ("efficientnet",
                                                                   "mobilenetv3")),
                                      ("head_style", self.head_style, ("conv_bn", "pool_conv")),
                                      ("padding", self.padding, ("symmetric", "same"))):
            if value not in allowed:
                raise ValueError(f"EfficientNet {field}={value!r}: use one of {list(allowed)}")
        settings = Settings(self.act, self.se_style, self.padding, self.bn_eps, self.bn_momentum,
                            self.dtype)
        ops = _ops(settings, train, "")
        x = x.astype(self.dtype)
        x = ops.act(ops.norm(name="stem_bn")(ops.conv(self.stem_channels, 3, 2,
                                                      name="stem_conv")(x)))
        count = sum(len(s) for s in self.stages)
        i = 0
        for s, stage in enumerate(self.stages):
            for j, block in enumerate(stage):
                x = MBBlock(block, settings, self.drop_path_rate * i / count,
                            name=f"stage{s + 1}_block{j + 1}")(x, train)
                i += 1
        if self.head_style == "conv_bn":
            x = ops.act(ops.norm(name="head_bn")(ops.conv(self.head_channels,
                                                          name="head_conv")(x)))
            x = jnp.mean(x, axis=(1, 2))
        else:  # timm's 1x1 conv on the pooled map, as a Dense (no 1x1 "feature map" for
            # Grad-CAM to pick as the last spatial layer); its kernel reshapes to the conv's
            x = jnp.mean(x, axis=(1, 2))
            x = ops.act(nn.Dense(self.head_channels, kernel_init=conv_init, dtype=self.dtype,
                                 name="head_conv")(x))
        return classifier(x, self.num_classes, self.head_dropout_rate, train, self.dtype)


def decode(arch: Sequence[Sequence[str]], width: float = 1.0, depth: float = 1.0,
           fix_first_last: bool = False) -> tuple[tuple[Block, ...], ...]:
    """Stages from timm's arch strings ('ir_r2_k3_s2_e6_c24_se0.25', '_nre': ReLU), channels
    scaled by `width` (rounded to 8s) and repeats by `depth` (ceil; the first and last stage
    kept with fix_first_last). Each stage here has one kind of block definition or, as in
    MobileNetV3, unscaled repeats."""
    stages = []
    for s, defs in enumerate(arch):
        blocks = []
        for d in defs:
            kind, *opts = d.split("_")
            o = {"e": "1", "se": "0"}
            for opt in opts:
                key = "se" if opt.startswith("se") else opt[0]
                o[key] = opt[len(key):]
            repeats = int(o["r"])
            if depth != 1.0 and not (fix_first_last and s in (0, len(arch) - 1)):
                repeats = int(math.ceil(repeats * depth))
            block = Block(kind, int(o["k"]), int(o["s"]), float(o["e"]),
                          make_divisible(int(o["c"]) * width), float(o["se"]),
                          "relu" if "nre" in opts else "")
            blocks += [block] + [block._replace(stride=1)] * (repeats - 1)
        stages.append(tuple(blocks))
    return tuple(stages)


_B_ARCH = (("ds_r1_k3_s1_e1_c16_se0.25",), ("ir_r2_k3_s2_e6_c24_se0.25",),
           ("ir_r2_k5_s2_e6_c40_se0.25",), ("ir_r3_k3_s2_e6_c80_se0.25",),
           ("ir_r3_k5_s1_e6_c112_se0.25",), ("ir_r4_k5_s2_e6_c192_se0.25",),
           ("ir_r1_k3_s1_e6_c320_se0.25",))
_LITE_ARCH = tuple(tuple(d.replace("_se0.25", "") for d in stage) for stage in _B_ARCH)

# name: (width, depth, resolution, dropout), as the paper and timm.
B_VARIANTS = {"b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2),
              "b2": (1.1, 1.2, 260, 0.3), "b3": (1.2, 1.4, 300, 0.3),
              "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
              "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5)}
# Lite3/4 at timm's evaluation sizes for the TF weights (the TF README trains at 280 / 300).
LITE_VARIANTS = {"lite0": (1.0, 1.0, 224, 0.2), "lite1": (1.0, 1.1, 240, 0.2),
                 "lite2": (1.1, 1.2, 260, 0.3), "lite3": (1.2, 1.4, 300, 0.3),
                 "lite4": (1.4, 1.8, 380, 0.3)}
# timm's crop_pct of the pretrained weights at each resolution.
CROP_FRAC = {224: 0.875, 240: 0.882, 260: 0.890, 300: 0.904, 380: 0.922, 456: 0.934,
             528: 0.942, 600: 0.949}
TF = {"padding": "same", "bn_eps": 1e-3, "bn_momentum": 0.99}  # TensorFlow-trained weights


def efficientnet(variant: str, tf: bool = False, **kwargs) -> EfficientNet:
    """EfficientNet-B0..B7 or -Lite0..4 (`variant` 'b0', 'lite2', ...); tf: TF's padding/BN."""
    lite = variant.startswith("lite")
    width, depth, _, dropout = (LITE_VARIANTS if lite else B_VARIANTS)[variant]
    fields = {"stages": decode(_LITE_ARCH if lite else _B_ARCH, width, depth, lite),
              "stem_channels": 32 if lite else make_divisible(32 * width),
              "head_channels": 1280 if lite else make_divisible(1280 * width),
              "act": "relu6" if lite else "silu", "head_dropout_rate": dropout,
              **(TF if tf else {})}
    return EfficientNet(**{**fields, **kwargs})


MODELS = {f"{prefix}efficientnet_{v}": partial(efficientnet, v, prefix == "tf_")
          for prefix in ("", "tf_") for v in (*B_VARIANTS, *LITE_VARIANTS)}
IMAGE_SIZE = {f"{prefix}efficientnet_{v}": spec[2] for prefix in ("", "tf_")
              for v, spec in {**B_VARIANTS, **LITE_VARIANTS}.items()}


def checkpoint_conventions(model: str, layout: str) -> tuple[dict, dict]:
    """(model fields, preprocessing) that `layout` weights for `model` imply: lukemelas'
    weights come from TensorFlow (SAME padding, BN eps 1e-3); TF's Lite weights take inputs
    in [-1, 1]; timm evaluates at the native resolution with its crop and bicubic resizing."""
    size = IMAGE_SIZE.get(model, 224)
    pre = {"crop_frac": CROP_FRAC.get(size, 0.875), "interpolation": "bicubic",
           "image_size": size}
    kwargs = dict(TF) if layout == "lukemelas" else {}
    if "lite" in model and (layout == "lukemelas" or model.startswith("tf_")):
        pre.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return kwargs, pre
