"""Where each checkpoint layout keeps each jaxcls parameter: renaming rules per model family.

A layout is `hf` (Hugging Face transformers), `timm`, `torchvision`, `big_vision` (flax .npz),
`lukemelas` (efficientnet_pytorch's EfficientNets) or `openai` (OpenAI's and open_clip's CLIP).
Torch layouts name modules and leaves (`weight`, `bias`, `running_mean`, `running_var`); a rule
maps a module path to a jaxcls module path and the leaf decides the rest (transposes, BatchNorm
statistics). "Raw" rules map whole keys whose values need no transform (class token, position
embedding, layer scale). Shapes are matched to the model afterwards by reshaping (heads split).
"""

import re
from collections.abc import Callable

import numpy as np

from jaxcls.weights import mbconv_keys

LAYOUTS = ("hf", "timm", "torchvision", "big_vision", "lukemelas", "openai")
Rule = tuple[str, str | Callable[[re.Match], str]]


def _plus1(m: re.Match, i: int) -> int:
    return int(m[i]) + 1


def _block(suffix: str, stage_plus: int = 1) -> Callable[[re.Match], str]:
    """Target `stage{S}_block{B}/suffix` from groups 1 (stage, 0-based unless stage_plus=0)
    and 2 (block, 0-based)."""
    return lambda m: f"stage{int(m[1]) + stage_plus}_block{_plus1(m, 2)}/{suffix}"


# ---- ResNet ------------------------------------------------------------------------------------
_HF_STAGE = r"(?:resnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)"
_RESNET_TORCHVISION: list[Rule] = [
    (r"conv1", "stem_conv"), (r"bn1", "stem_bn"),
    *[(rf"layer(\d)\.(\d+)\.conv{k}", _block(f"Conv_{k - 1}", 0)) for k in (1, 2, 3)],
    *[(rf"layer(\d)\.(\d+)\.bn{k}", _block(f"BatchNorm_{k - 1}", 0)) for k in (1, 2, 3)],
    (r"layer(\d)\.(\d+)\.downsample\.0", _block("downsample_conv", 0)),
    (r"layer(\d)\.(\d+)\.downsample\.1", _block("downsample_bn", 0)),
    (r"fc", "head"),
]
_RESNET_HF: list[Rule] = [
    (r"(?:resnet\.)?embedder\.embedder\.convolution", "stem_conv"),
    (r"(?:resnet\.)?embedder\.embedder\.normalization", "stem_bn"),
    (_HF_STAGE + r"\.shortcut\.convolution", _block("downsample_conv")),
    (_HF_STAGE + r"\.shortcut\.normalization", _block("downsample_bn")),
    (_HF_STAGE + r"\.layer\.(\d+)\.convolution",
     lambda m: f"stage{_plus1(m, 1)}_block{_plus1(m, 2)}/Conv_{m[3]}"),
    (_HF_STAGE + r"\.layer\.(\d+)\.normalization",
     lambda m: f"stage{_plus1(m, 1)}_block{_plus1(m, 2)}/BatchNorm_{m[3]}"),
    (r"classifier\.1", "head"),
]

# ---- ViT ---------------------------------------------------------------------------------------
_QKV = {"q": "query", "k": "key", "v": "value"}
_HF_VIT = r"(?:vit\.|deit\.)?"  # ViTForImageClassification's and DeiT's backbone prefixes
_HF_OLD = _HF_VIT + r"encoder\.layer\.(\d+)\."  # on the Hub (transformers < 5)
_HF_NEW = _HF_VIT + r"layers\.(\d+)\."  # transformers >= 5
_VIT_HF: list[Rule] = [
    (_HF_VIT + r"embeddings\.patch_embeddings\.projection", "patch_embed"),
    (_HF_OLD + r"attention\.attention\.(query|key|value)", r"block\1/attn/\2"),
    (_HF_NEW + r"attention\.(q|k|v)_proj", lambda m: f"block{m[1]}/attn/{_QKV[m[2]]}"),
    (_HF_OLD + r"attention\.output\.dense", r"block\1/attn/out"),
    (_HF_NEW + r"attention\.o_proj", r"block\1/attn/out"),
    (_HF_OLD + r"intermediate\.dense", r"block\1/mlp/fc1"),
    (_HF_OLD + r"output\.dense", r"block\1/mlp/fc2"),
    (_HF_NEW + r"mlp\.(fc1|fc2)", r"block\1/mlp/\2"),
    (_HF_VIT + r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_before", r"block\1/norm1"),
    (_HF_VIT + r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_after", r"block\1/norm2"),
    (_HF_VIT + r"layernorm", "encoder_norm"),
    (r"classifier", "head"),
]
_VIT_HF_RAW: list[Rule] = [
    (_HF_VIT + r"embeddings\.cls_token", "cls"),
    (_HF_VIT + r"embeddings\.position_embeddings", "pos_embedding"),
]
_VIT_TIMM: list[Rule] = [
    (r"patch_embed\.proj", "patch_embed"),
    (r"blocks\.(\d+)\.(norm1|norm2)", r"block\1/\2"),
    (r"blocks\.(\d+)\.attn\.(q|k|v)", lambda m: f"block{m[1]}/attn/{_QKV[m[2]]}"),
    (r"blocks\.(\d+)\.attn\.proj", r"block\1/attn/out"),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)", r"block\1/mlp/\2"),
    (r"norm", "encoder_norm"),
    (r"pre_logits\.fc", "pre_logits"),
    (r"head", "head"),
]
_VIT_TIMM_RAW: list[Rule] = [(r"cls_token", "cls"), (r"pos_embed", "pos_embedding")]
_TV_LAYER = r"encoder\.layers\.encoder_layer_(\d+)\."
_VIT_TORCHVISION: list[Rule] = [
    (r"conv_proj", "patch_embed"),
    (_TV_LAYER + r"ln_1", r"block\1/norm1"),
    (_TV_LAYER + r"ln_2", r"block\1/norm2"),
    (_TV_LAYER + r"self_attention\.(q|k|v)", lambda m: f"block{m[1]}/attn/{_QKV[m[2]]}"),
    (_TV_LAYER + r"self_attention\.out_proj", r"block\1/attn/out"),
    (_TV_LAYER + r"mlp\.(?:0|linear_1)", r"block\1/mlp/fc1"),
    (_TV_LAYER + r"mlp\.(?:3|linear_2)", r"block\1/mlp/fc2"),
    (r"encoder\.ln", "encoder_norm"),
    (r"heads\.pre_logits", "pre_logits"),
    (r"heads\.head", "head"),
]
_VIT_TORCHVISION_RAW: list[Rule] = [(r"class_token", "cls"),
                                    (r"encoder\.pos_embedding", "pos_embedding")]
_BV_BLOCK = r"Transformer/encoderblock_(\d+)/"
_VIT_BIG_VISION: list[Rule] = [
    (r"embedding", "patch_embed"),
    (_BV_BLOCK + r"LayerNorm_0", r"block\1/norm1"),
    (_BV_BLOCK + r"LayerNorm_[12]", r"block\1/norm2"),
    (_BV_BLOCK + r"MultiHeadDotProductAttention_\d/(query|key|value|out)", r"block\1/attn/\2"),
    (_BV_BLOCK + r"MlpBlock_\d/Dense_0", r"block\1/mlp/fc1"),
    (_BV_BLOCK + r"MlpBlock_\d/Dense_1", r"block\1/mlp/fc2"),
    (r"Transformer/encoder_norm", "encoder_norm"),
    (r"pre_logits", "pre_logits"),
    (r"head", "head"),
]
_VIT_BIG_VISION_RAW: list[Rule] = [(r"cls", "cls"),
                                   (r"Transformer/posembed_input/pos_embedding", "pos_embedding")]

# ---- ConvNeXt ----------------------------------------------------------------------------------
_HF_CN = r"(?:convnext\.)?encoder\.stages\.(\d+)\."
_HF_CN_BLOCK = _HF_CN + r"layers\.(\d+)\."
_CONVNEXT_HF: list[Rule] = [
    (r"(?:convnext\.)?embeddings\.patch_embeddings", "stem_conv"),
    (r"(?:convnext\.)?embeddings\.layernorm", "stem_norm"),
    (_HF_CN + r"downsampling_layer\.0", lambda m: f"stage{_plus1(m, 1)}_downsample_norm"),
    (_HF_CN + r"downsampling_layer\.1", lambda m: f"stage{_plus1(m, 1)}_downsample_conv"),
    *[(_HF_CN_BLOCK + theirs, _block(ours))
      for theirs, ours in (("dwconv", "dwconv"), ("layernorm", "norm"), ("pwconv1", "fc1"),
                           ("pwconv2", "fc2"))],
    (r"(?:convnext\.)?layernorm", "head_norm"),
    (r"classifier", "head"),
]
_CONVNEXT_HF_RAW: list[Rule] = [
    (_HF_CN_BLOCK + "layer_scale_parameter", _block("layer_scale"))]
_TIMM_CN_BLOCK = r"stages\.(\d+)\.blocks\.(\d+)\."
_CONVNEXT_TIMM: list[Rule] = [
    (r"stem\.0", "stem_conv"), (r"stem\.1", "stem_norm"),
    (r"stages\.(\d+)\.downsample\.0", lambda m: f"stage{_plus1(m, 1)}_downsample_norm"),
    (r"stages\.(\d+)\.downsample\.1", lambda m: f"stage{_plus1(m, 1)}_downsample_conv"),
    *[(_TIMM_CN_BLOCK + theirs, _block(ours))
      for theirs, ours in (("conv_dw", "dwconv"), ("norm", "norm"), (r"mlp\.fc1", "fc1"),
                           (r"mlp\.fc2", "fc2"))],
    (r"head\.norm", "head_norm"), (r"head\.fc", "head"),
]
_CONVNEXT_TIMM_RAW: list[Rule] = [
    (_TIMM_CN_BLOCK + "gamma", _block("layer_scale"))]
_TV_CN_BLOCK = r"features\.([1357])\.(\d+)\."  # features: stem, stage, down, stage, ...
_CONVNEXT_TORCHVISION: list[Rule] = [
    (r"features\.0\.0", "stem_conv"), (r"features\.0\.1", "stem_norm"),
    (r"features\.([246])\.0", lambda m: f"stage{int(m[1]) // 2 + 1}_downsample_norm"),
    (r"features\.([246])\.1", lambda m: f"stage{int(m[1]) // 2 + 1}_downsample_conv"),
    *[(_TV_CN_BLOCK + theirs,
       lambda m, ours=ours: f"stage{(int(m[1]) + 1) // 2}_block{_plus1(m, 2)}/{ours}")
      for theirs, ours in ((r"block\.0", "dwconv"), (r"block\.2", "norm"), (r"block\.3", "fc1"),
                           (r"block\.5", "fc2"))],
    (r"classifier\.0", "head_norm"), (r"classifier\.2", "head"),
]
_CONVNEXT_TORCHVISION_RAW: list[Rule] = [
    (_TV_CN_BLOCK + "layer_scale",
     lambda m: f"stage{(int(m[1]) + 1) // 2}_block{_plus1(m, 2)}/layer_scale")]

# ---- Classic CNNs: AlexNet, VGG, GoogLeNet / Inception-v3, DenseNet ------------------------------
# timm's inception_v3 and densenet keep torchvision's names; timm has no AlexNet or GoogLeNet.
_ALEXNET_TORCHVISION: list[Rule] = [
    (r"features\.(0|3|6|8|10)", lambda m: f"conv{(0, 3, 6, 8, 10).index(int(m[1])) + 1}"),
    (r"classifier\.1", "fc6"), (r"classifier\.4", "fc7"), (r"classifier\.6", "head"),
]
_VGG_TORCHVISION: list[Rule] = [
    (r"features\.(\d+)", r"features_\1"),
    (r"classifier\.0", "fc1"), (r"classifier\.3", "fc2"), (r"classifier\.6", "head"),
]
_VGG_TIMM: list[Rule] = [
    (r"features\.(\d+)", r"features_\1"),
    (r"pre_logits\.(fc1|fc2)", r"pre_logits/\1"), (r"head\.fc", "head"),
]
_INCEPTION: list[Rule] = [  # GoogLeNet (torchvision) and Inception-v3 (both)
    (r"(\w+)\.(branch\d)\.(\d)\.(conv|bn)", r"\1/\2_\3/\4"),  # GoogLeNet's Sequentials
    (r"(\w+)\.(branch\w+)\.(conv|bn)", r"\1/\2/\3"),
    (r"(conv\d|Conv2d_\w+)\.(conv|bn)", r"\1/\2"),
    (r"fc", "head"),
]
_DENSENET: list[Rule] = [
    (r"features\.(conv0|norm0|norm5)", r"\1"),
    # torchvision's old checkpoints: `norm.1`, `conv.2` (a regex remaps them in torchvision)
    (r"features\.denseblock(\d)\.denselayer(\d+)\.(norm|conv)\.?([12])",
     r"denseblock\1/denselayer\2/\3\4"),
    (r"features\.transition(\d)\.(norm|conv)", r"transition\1/\2"),
    (r"classifier", "head"),
]
# Training-only auxiliary classifiers (GoogLeNet's aux1/aux2, Inception-v3's AuxLogits).
_AUX_HEADS = r"(?:aux[12]|AuxLogits)\..*"
# Keys only torchvision writes (AlexNet's and VGG's last Linear; GoogLeNet, which timm lacks).
_TORCHVISION_CNN_PREFIXES = ("classifier.6.", "inception3a.")
_CNN_RULES: dict[tuple[str, str], tuple[list[Rule], list[Rule]]] = {
    ("alexnet", "torchvision"): (_ALEXNET_TORCHVISION, []),
    ("vgg", "torchvision"): (_VGG_TORCHVISION, []),
    ("vgg", "timm"): (_VGG_TIMM, []),
    ("inception", "torchvision"): (_INCEPTION, []),
    ("inception", "timm"): (_INCEPTION, []),
    ("densenet", "torchvision"): (_DENSENET, []),
    ("densenet", "timm"): (_DENSENET, []),
}

# ---- EfficientNet / MobileNet -------------------------------------------------------------------
# jaxcls keeps timm's module names inside blocks; lukemelas and torchvision keys are first
# renamed to timm's (weights/mbconv_keys.py), then these rules apply.
_MBCONV_TIMM: list[Rule] = [
    (r"conv_stem", "stem_conv"), (r"bn1", "stem_bn"),
    (r"blocks\.(\d+)\.(\d+)\.(.+)",
     lambda m: f"stage{_plus1(m, 1)}_block{_plus1(m, 2)}/{m[3].replace('.', '/')}"),
    (r"conv_head", "head_conv"), (r"bn2", "head_bn"), (r"classifier", "head"),
]

# ---- RegNet ------------------------------------------------------------------------------------
# timm: `s{S}.b{B}.conv{k}.conv/.bn`, SE `fc1`/`fc2` (efficientnet's SqueezeExcite names them
# conv_reduce / conv_expand); Hugging Face: `encoder.stages.S.layers.B.layer.K` with K = 0, 1
# the first convs, 2 the SE (`attention.0` / `.2`), 3 the last conv.
_REGNET_TIMM: list[Rule] = [
    (r"stem\.conv", "stem_conv"), (r"stem\.bn", "stem_bn"),
    (r"s(\d)\.b(\d+)\.conv(\d)\.conv", r"stage\1_block\2/conv\3"),
    (r"s(\d)\.b(\d+)\.conv(\d)\.bn", r"stage\1_block\2/bn\3"),
    (r"s(\d)\.b(\d+)\.se\.fc1", r"stage\1_block\2/se/conv_reduce"),
    (r"s(\d)\.b(\d+)\.se\.fc2", r"stage\1_block\2/se/conv_expand"),
    (r"s(\d)\.b(\d+)\.downsample\.(conv|bn)", r"stage\1_block\2/downsample_\3"),
    (r"head\.fc", "head"),
]
_HF_REGNET_LAYER = r"(?:regnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.layer"
_REGNET_HF: list[Rule] = [
    (r"(?:regnet\.)?embedder\.embedder\.convolution", "stem_conv"),
    (r"(?:regnet\.)?embedder\.embedder\.normalization", "stem_bn"),
    *[(_HF_REGNET_LAYER + rf"\.{k}\.{theirs}", _block(ours))
      for k, n in ((0, 1), (1, 2), (3, 3))
      for theirs, ours in (("convolution", f"conv{n}"), ("normalization", f"bn{n}"))],
    (_HF_REGNET_LAYER + r"\.2\.attention\.0", _block("se/conv_reduce")),
    (_HF_REGNET_LAYER + r"\.2\.attention\.2", _block("se/conv_expand")),
    (r"(?:regnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution",
     _block("downsample_conv")),
    (r"(?:regnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization",
     _block("downsample_bn")),
    (r"classifier\.1", "head"),
]

# ---- CoAtNet -----------------------------------------------------------------------------------
# timm's MaxxVit: `stages.S.blocks.B.<module>` with jaxcls' names the same but for these parts.
_COATNET_PARTS = ((r"shortcut\.expand", "shortcut_expand"), (r"norm1\.norm", "norm1"),
                  (r"(se|se_early)\.fc1", r"\1.conv_reduce"),
                  (r"(se|se_early)\.fc2", r"\1.conv_expand"))


def _coatnet_part(m: re.Match) -> str:
    part = m[3]
    for theirs, ours in _COATNET_PARTS:
        part = re.sub(rf"^{theirs}$", ours, part)
    return f"stage{_plus1(m, 1)}_block{_plus1(m, 2)}/{part.replace('.', '/')}"


_COATNET_TIMM: list[Rule] = [
    (r"stem\.(conv1|norm1|conv2)", r"stem_\1"),
    (r"stages\.(\d)\.blocks\.(\d+)\.(.+)", _coatnet_part),
    (r"norm", "norm"), (r"head\.norm", "head_norm"), (r"head\.pre_logits\.fc", "pre_logits"),
    (r"head\.fc", "head"),
]
_COATNET_TIMM_RAW: list[Rule] = [
    (r"stages\.(\d)\.blocks\.(\d+)\.attn\.rel_pos\.relative_position_bias_table",
     _block("attn/relative_position_bias_table")),
]

# ---- DeiT ----------------------------------------------------------------------------------
# ViT's rules, and the distilled models' second token and head. Hugging Face's DeiT classes
# (always with a distillation token) name the heads cls_classifier / distillation_classifier.
_DEIT_TIMM: list[Rule] = [(r"head_dist", "head_dist"), *_VIT_TIMM]
_DEIT_TIMM_RAW: list[Rule] = [(r"dist_token", "dist_token"), *_VIT_TIMM_RAW]
_DEIT_HF: list[Rule] = [(r"cls_classifier", "head"), (r"distillation_classifier", "head_dist"),
                        *_VIT_HF]
_DEIT_HF_RAW: list[Rule] = [(_HF_VIT + r"embeddings\.distillation_token", "dist_token"),
                            *_VIT_HF_RAW]

# ---- Swin --------------------------------------------------------------------------------------
# timm's stage i starts with its patch merging (`layers.i.downsample`); Hugging Face's stage i
# ends with it, so HF's `layers.i.downsample` is stage i + 2 (1-based) here.
_TIMM_SWIN = r"layers\.(\d+)\.blocks\.(\d+)\."
_SWIN_TIMM: list[Rule] = [
    (r"patch_embed\.proj", "patch_embed"), (r"patch_embed\.norm", "patch_norm"),
    (r"layers\.(\d+)\.downsample\.(norm|reduction)",
     lambda m: f"stage{_plus1(m, 1)}_downsample/{m[2]}"),
    (_TIMM_SWIN + r"(norm1|norm2)", lambda m: _block(m[3])(m)),
    (_TIMM_SWIN + r"attn\.(q|k|v)", lambda m: _block(f"attn/{_QKV[m[3]]}")(m)),
    (_TIMM_SWIN + r"attn\.proj", _block("attn/out")),
    (_TIMM_SWIN + r"mlp\.(fc1|fc2)", lambda m: _block(f"mlp/{m[3]}")(m)),
    (r"norm", "norm"), (r"head\.fc", "head"),
]
_SWIN_TIMM_RAW: list[Rule] = [
    (_TIMM_SWIN + r"attn\.relative_position_bias_table", _block("relative_position_bias_table"))]
_HF_SWIN = r"(?:swin\.)?encoder\.layers\.(\d+)\.blocks\.(\d+)\."
_SWIN_HF: list[Rule] = [
    (r"(?:swin\.)?embeddings\.patch_embeddings\.projection", "patch_embed"),
    (r"(?:swin\.)?embeddings\.norm", "patch_norm"),
    (r"(?:swin\.)?encoder\.layers\.(\d+)\.downsample\.(norm|reduction)",
     lambda m: f"stage{int(m[1]) + 2}_downsample/{m[2]}"),
    (_HF_SWIN + r"layernorm_before", _block("norm1")),
    (_HF_SWIN + r"layernorm_after", _block("norm2")),
    (_HF_SWIN + r"attention\.self\.(query|key|value)", lambda m: _block(f"attn/{m[3]}")(m)),
    (_HF_SWIN + r"attention\.(q|k|v)_proj", lambda m: _block(f"attn/{_QKV[m[3]]}")(m)),
    (_HF_SWIN + r"attention\.(?:output\.dense|o_proj)", _block("attn/out")),
    (_HF_SWIN + r"(?:intermediate\.dense|mlp\.fc1)", _block("mlp/fc1")),
    (_HF_SWIN + r"(?:output\.dense|mlp\.fc2)", _block("mlp/fc2")),
    (r"(?:swin\.)?layernorm", "norm"), (r"classifier", "head"),
]
# torchvision: features = patch embedding, stage 1, merging, stage 2, merging, stage 3, ...
_TV_SWIN = r"features\.([1357])\.(\d+)\."


def _tv_swin(suffix: str) -> Callable[[re.Match], str]:
    return lambda m: f"stage{(int(m[1]) + 1) // 2}_block{_plus1(m, 2)}/{m.expand(suffix)}"


_SWIN_TORCHVISION: list[Rule] = [
    (r"features\.0\.0", "patch_embed"), (r"features\.0\.2", "patch_norm"),
    (r"features\.([246])\.(norm|reduction)",
     lambda m: f"stage{int(m[1]) // 2 + 1}_downsample/{m[2]}"),
    (_TV_SWIN + r"(norm1|norm2)", _tv_swin(r"\3")),
    (_TV_SWIN + r"attn\.(q|k|v)", lambda m: _tv_swin(f"attn/{_QKV[m[3]]}")(m)),
    (_TV_SWIN + r"attn\.proj", _tv_swin("attn/out")),
    (_TV_SWIN + r"mlp\.0", _tv_swin("mlp/fc1")), (_TV_SWIN + r"mlp\.3", _tv_swin("mlp/fc2")),
    (r"norm", "norm"), (r"head", "head"),
]
_SWIN_TORCHVISION_RAW: list[Rule] = [
    (_TV_SWIN + r"attn\.relative_position_bias_table", _tv_swin("relative_position_bias_table"))]
_SWIN_HF_RAW: list[Rule] = [
    (_HF_SWIN + r"attention\.(?:self|relative_position_bias)\.relative_position_bias_table",
     _block("relative_position_bias_table"))]

# ---- CLIP (jaxcls/clip) -----------------------------------------------------------------------
# Both towers under one model: params/image/... (a ViT's names) and params/text/....
# OpenAI / open_clip: `visual.*` is the image tower, the text tower sits at the top level;
# `proj` and `text_projection` are [width, embed] matrices used as `x @ proj` (no transpose).
_OPENAI_BLOCK = r"(visual\.)?transformer\.resblocks\.(\d+)\."


def _clip_block(suffix: str) -> Callable[[re.Match], str]:
    """`{image|text}/block{B}/suffix` from groups 1 (the visual. prefix or not) and 2."""
    return lambda m: f"{'image' if m[1] else 'text'}/block{m[2]}/{m.expand(suffix)}"


_CLIP_OPENAI: list[Rule] = [  # the text tower and a ViT image tower
    (r"visual\.conv1", "image/patch_embed"),
    (r"visual\.ln_pre", "image/pre_norm"),
    (r"visual\.ln_post", "image/encoder_norm"),
    (_OPENAI_BLOCK + r"ln_([12])", _clip_block(r"norm\3")),
    (_OPENAI_BLOCK + r"attn\.(q|k|v)", lambda m: _clip_block(f"attn/{_QKV[m[3]]}")(m)),
    (_OPENAI_BLOCK + r"attn\.out_proj", _clip_block("attn/out")),
    (_OPENAI_BLOCK + r"mlp\.c_fc", _clip_block("mlp/fc1")),
    (_OPENAI_BLOCK + r"mlp\.c_proj", _clip_block("mlp/fc2")),
    (r"ln_final", "text/encoder_norm"),
    (r"text_projection", "text/proj"),  # open_clip towers that hold it as an nn.Linear
]
_CLIP_TEXT_OPENAI_RAW: list[Rule] = [
    (r"token_embedding\.weight", "text/token_embedding/embedding"),
    (r"positional_embedding", "text/pos_embedding"),
    (r"text_projection", "text/proj/kernel"),
    (r"logit_scale", "logit_scale"),
]
_CLIP_OPENAI_RAW: list[Rule] = [
    (r"visual\.class_embedding", "image/cls"),
    (r"visual\.positional_embedding", "image/pos_embedding"),
    (r"visual\.proj", "image/proj/kernel"),
    *_CLIP_TEXT_OPENAI_RAW,
]
# RN50's ModifiedResNet image tower (jaxcls/clip/resnet.py); its attention pool's q/k/v/c_proj.
_CLIP_RN_OPENAI: list[Rule] = [
    (r"visual\.(conv|bn)([123])", r"image/stem_\1\2"),
    (r"visual\.layer(\d)\.(\d+)\.(conv|bn)([123])",
     lambda m: f"image/stage{m[1]}_block{_plus1(m, 2)}/{m[3]}{m[4]}"),
    (r"visual\.layer(\d)\.(\d+)\.downsample\.([01])",
     lambda m: f"image/stage{m[1]}_block{_plus1(m, 2)}/downsample_"
               f"{'conv' if m[3] == '0' else 'bn'}"),
    (r"visual\.attnpool\.(q|k|v)_proj", lambda m: f"image/attnpool/attn/{_QKV[m[1]]}"),
    (r"visual\.attnpool\.c_proj", "image/attnpool/attn/out"),
    *[rule for rule in _CLIP_OPENAI if not rule[0].startswith("visual")],
]
_CLIP_RN_OPENAI_RAW: list[Rule] = [
    (r"visual\.attnpool\.positional_embedding", "image/attnpool/pos_embedding"),
    *_CLIP_TEXT_OPENAI_RAW,
]
# Hugging Face CLIPModel: q/k/v already split, projections as bias-free Linears [embed, width].
_HF_CLIP = r"(vision|text)_model\.encoder\.layers\.(\d+)\."


def _hf_clip_block(suffix: str) -> Callable[[re.Match], str]:
    return lambda m: f"{'image' if m[1] == 'vision' else 'text'}/block{m[2]}/{m.expand(suffix)}"


_CLIP_HF: list[Rule] = [
    (r"vision_model\.embeddings\.patch_embedding", "image/patch_embed"),
    (r"vision_model\.pre_layrnorm", "image/pre_norm"),  # sic
    (r"vision_model\.post_layernorm", "image/encoder_norm"),
    (_HF_CLIP + r"layer_norm([12])", _hf_clip_block(r"norm\3")),
    (_HF_CLIP + r"self_attn\.(q|k|v)_proj", lambda m: _hf_clip_block(f"attn/{_QKV[m[3]]}")(m)),
    (_HF_CLIP + r"self_attn\.out_proj", _hf_clip_block("attn/out")),
    (_HF_CLIP + r"mlp\.(fc1|fc2)", _hf_clip_block(r"mlp/\3")),
    (r"text_model\.final_layer_norm", "text/encoder_norm"),
    (r"visual_projection", "image/proj"),
    (r"text_projection", "text/proj"),
]
_CLIP_HF_RAW: list[Rule] = [
    (r"vision_model\.embeddings\.class_embedding", "image/cls"),
    (r"vision_model\.embeddings\.position_embedding\.weight", "image/pos_embedding"),
    (r"text_model\.embeddings\.token_embedding\.weight", "text/token_embedding/embedding"),
    (r"text_model\.embeddings\.position_embedding\.weight", "text/pos_embedding"),
    (r"logit_scale", "logit_scale"),
]

# (family, layout) -> (module rules, raw rules)
RULES: dict[tuple[str, str], tuple[list[Rule], list[Rule]]] = {
    ("resnet", "hf"): (_RESNET_HF, []),
    ("resnet", "timm"): (_RESNET_TORCHVISION, []),
    ("resnet", "torchvision"): (_RESNET_TORCHVISION, []),
    ("vit", "hf"): (_VIT_HF, _VIT_HF_RAW),
    ("vit", "timm"): (_VIT_TIMM, _VIT_TIMM_RAW),
    ("vit", "torchvision"): (_VIT_TORCHVISION, _VIT_TORCHVISION_RAW),
    ("vit", "big_vision"): (_VIT_BIG_VISION, _VIT_BIG_VISION_RAW),
    ("convnext", "hf"): (_CONVNEXT_HF, _CONVNEXT_HF_RAW),
    ("convnext", "timm"): (_CONVNEXT_TIMM, _CONVNEXT_TIMM_RAW),
    ("convnext", "torchvision"): (_CONVNEXT_TORCHVISION, _CONVNEXT_TORCHVISION_RAW),
    ("deit", "timm"): (_DEIT_TIMM, _DEIT_TIMM_RAW),
    ("deit", "hf"): (_DEIT_HF, _DEIT_HF_RAW),
    ("swin", "timm"): (_SWIN_TIMM, _SWIN_TIMM_RAW),
    ("swin", "hf"): (_SWIN_HF, _SWIN_HF_RAW),
    ("swin", "torchvision"): (_SWIN_TORCHVISION, _SWIN_TORCHVISION_RAW),
    **_CNN_RULES,
    ("regnet", "timm"): (_REGNET_TIMM, []),
    ("regnet", "hf"): (_REGNET_HF, []),
    ("coatnet", "timm"): (_COATNET_TIMM, _COATNET_TIMM_RAW),
    ("clip", "openai"): (_CLIP_OPENAI, _CLIP_OPENAI_RAW),
    ("clip", "hf"): (_CLIP_HF, _CLIP_HF_RAW),
    ("clip_rn", "openai"): (_CLIP_RN_OPENAI, _CLIP_RN_OPENAI_RAW),
    **{(family, layout): (_MBCONV_TIMM, []) for family in ("efficientnet", "mobilenet")
       for layout in ("timm", "torchvision", "lukemelas")},
}
# (family, layout) -> a renaming of the source keys applied before the rules.
KEY_REWRITES: dict[tuple[str, str], Callable[[dict], dict]] = {
    **{(family, "lukemelas"): mbconv_keys.from_lukemelas for family in ("efficientnet",
                                                                         "mobilenet")},
    **{(family, "torchvision"): mbconv_keys.from_torchvision for family in ("efficientnet",
                                                                             "mobilenet")},
}
# Families whose models keep timm's fused `qkv` (CoAtNet's is laid out head first, not q|k|v).
KEEP_FUSED_QKV = ("coatnet",)
# Keys with nothing to load: BatchNorm's step counter, Hugging Face's unused pooler, Swin's
# relative position index (a buffer older Hugging Face checkpoints store; jaxcls computes it),
# CLIP's buffers and the scalars of OpenAI's files (position ids, causal mask, sizes).
IGNORED = re.compile(r".*num_batches_tracked|(?:vit\.|deit\.)?pooler\..*|"
                     r".*relative_position_index|.*position_ids|attn_mask|"
                     r"input_resolution|context_length|vocab_size|" + _AUX_HEADS)


def is_clip(keys: list[str]) -> bool:
    """Whether the keys are a CLIP model's (OpenAI / open_clip, or Hugging Face CLIPModel)."""
    return any(k.startswith(("visual.transformer.", "vision_model.embeddings.")) for k in keys)


def detect(keys: list[str]) -> str:
    """The layout a flat key list is written in."""
    if any(k.startswith("_conv_stem.") for k in keys):  # lukemelas' EfficientNet
        return "lukemelas"
    if any(k.startswith("visual.") for k in keys):  # OpenAI / open_clip CLIP
        return "openai"
    if any(k.startswith(("vision_model.", "text_model.")) for k in keys):  # HF CLIPModel
        return "hf"
    if any("/" in k for k in keys):
        return "big_vision"
    if any(s in k for k in keys for s in ("embeddings.patch_embeddings", "embedder.embedder",
                                          "vit.layers.", "encoder.layer.")):
        return "hf"
    if any(k.startswith(_TORCHVISION_CNN_PREFIXES) for k in keys):
        return "torchvision"
    if any(k.startswith(("conv_proj.", "features.0.0.", "encoder.layers.encoder_layer_"))
           for k in keys):
        return "torchvision"
    return "timm"


def _apply(rules: list[Rule], name: str) -> str | None:
    for pattern, target in rules:
        m = re.fullmatch(pattern, name)
        if m:
            return target(m) if callable(target) else m.expand(target)
    return None


def _split_fused_qkv(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """timm's `attn.qkv` and torchvision's `in_proj_` hold query, key and value stacked on the
    output axis; split them so one rule per projection applies."""
    out = {}
    for key, value in tensors.items():
        m = re.fullmatch(r"(.*)\.(?:qkv\.|in_proj_)(weight|bias)", key)
        if m:
            for name, part in zip("qkv", np.split(value, 3, axis=0), strict=True):
                out[f"{m[1]}.{name}.{m[2]}"] = part
        else:
            out[key] = value
    return out


def _unstack_scanned(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """big_vision's scanned encoders store every block stacked under `encoderblock/`."""
    out = {}
    for key, value in tensors.items():
        if key.startswith("Transformer/encoderblock/"):
            for i, part in enumerate(value):
                out[key.replace("encoderblock/", f"encoderblock_{i}/")] = part
        else:
            out[key] = value
    return out


def _torch_leaf(module: str, leaf: str, value: np.ndarray) -> tuple[str, np.ndarray] | None:
    """jaxcls 'collection/module/leaf' and value for a torch leaf (None: not a known leaf)."""
    if leaf == "weight":
        if value.ndim == 4:  # conv [O, I, H, W] -> [H, W, I, O]
            return f"params/{module}/kernel", value.transpose(2, 3, 1, 0)
        if value.ndim == 2:  # linear [out, in] -> [in, out]
            return f"params/{module}/kernel", value.T
        return f"params/{module}/scale", value  # norm scale
    if leaf == "bias":
        return f"params/{module}/bias", value
    if leaf == "running_mean":
        return f"batch_stats/{module}/mean", value
    if leaf == "running_var":
        return f"batch_stats/{module}/var", value
    return None


def convert(tensors: dict[str, np.ndarray], family: str, layout: str
            ) -> tuple[dict[str, np.ndarray], list[str]]:
    """({'params/stage1_block1/Conv_0/kernel': array, ...}, unexpected source keys)."""
    if (family, layout) not in RULES:
        raise ValueError(f"no {layout} layout for {family} models; known: "
                         f"{sorted(k[1] for k in RULES if k[0] == family)}")
    rules, raw_rules = RULES[family, layout]
    tensors = KEY_REWRITES.get((family, layout), dict)(tensors)
    if family not in KEEP_FUSED_QKV:
        tensors = _split_fused_qkv(tensors)
    tensors = _unstack_scanned(tensors)
    out, unexpected = {}, []
    for key, value in tensors.items():
        if IGNORED.fullmatch(key):
            continue
        target = _apply(raw_rules, key)
        if target is not None:
            out[f"params/{target}"] = value
            continue
        sep = "/" if layout == "big_vision" else "."
        module, _, leaf = key.rpartition(sep)
        target = _apply(rules, module)
        if target is None:
            unexpected.append(key)
        elif layout == "big_vision":
            out[f"params/{target}/{leaf}"] = value
        else:
            converted = _torch_leaf(target, leaf, value)
            if converted is None:
                unexpected.append(key)
            else:
                out[converted[0]] = converted[1]
    return out, unexpected
