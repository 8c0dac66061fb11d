"""Pretrained-weight import: logits equal PyTorch references (transformers models, randomly
initialised here) for ResNet-50, ViT-B/16 and ConvNeXt-T, from Hugging Face folders and from
the same tensors renamed into timm, torchvision and big_vision layouts (renamings written
independently of jaxcls's rules)."""

import functools
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch as safetensors_torch
import torch
import transformers

from jaxcls import weights


def _randomise_buffers(model):
    """Non-trivial BatchNorm statistics and layer scales, so that loading them matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_scale" in name:
                p.uniform_(0.2, 0.6, generator=g)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1, generator=g)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 2.0, generator=g)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """family -> (HF folder, state dict of numpy arrays, NHWC images, reference logits)."""
    torch.manual_seed(0)
    cfg = {
        "resnet50": transformers.ResNetForImageClassification(
            transformers.ResNetConfig(num_labels=1000)),
        "vit_b16": transformers.ViTForImageClassification(
            transformers.ViTConfig(num_labels=1000)),
        "convnext_tiny": transformers.ConvNextForImageClassification(
            transformers.ConvNextConfig(num_labels=1000)),
    }
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    out = {}
    for name, model in cfg.items():
        _randomise_buffers(model)
        model.eval()
        folder = str(tmp_path_factory.mktemp(name))
        model.save_pretrained(folder)
        with torch.no_grad():
            logits = model(pixel_values=images).logits.numpy()
        state = {k: v.numpy() for k, v in model.state_dict().items()}
        out[name] = (folder, state, images.numpy().transpose(0, 2, 3, 1), logits)
    return out


@functools.cache
def _forward(model):
    """One compiled forward per distinct model (equal modules hash equal)."""
    return jax.jit(model.apply)


def _assert_logits_match(path, name, images, expected, **kwargs):
    model, variables = weights.load(path, name, **kwargs)
    logits = np.asarray(_forward(model)(variables, jnp.asarray(images)))
    np.testing.assert_allclose(logits, expected, rtol=1e-4,
                               atol=1e-4 * float(np.abs(expected).max()))


def _rename(state, rules):
    """Applies (regex, replacement) rules to every key; a key no rule matches is an error."""
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            raise KeyError(key)
    return out


def _fuse_qkv(state, pattern, fused):
    """Stacks separate q/k/v projections into one (timm's qkv, torchvision's in_proj)."""
    out = dict(state)
    for key in [k for k in state if re.fullmatch(pattern.format(p="q"), k)]:
        parts = [out.pop(re.sub(r"\.q_proj\.", f".{p}_proj.", key)) for p in "qkv"]
        out[re.sub(pattern.format(p="q"), fused, key)] = np.concatenate(parts, axis=0)
    return out


def _save_safetensors(state, path):
    safetensors_torch.save_file({k: torch.from_numpy(np.ascontiguousarray(v))
                                 for k, v in state.items()}, path)
    return path


def _save_pth(state, path):
    torch.save({"state_dict": {k: torch.from_numpy(np.ascontiguousarray(v))
                               for k, v in state.items()}}, path)
    return path


# ---- Hugging Face folders ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet50", "vit_b16", "convnext_tiny"])
def test_hugging_face_folder_matches_transformers_logits(reference, name):
    folder, _, images, logits = reference[name]
    assert weights.read(folder, name).layout == "hf"
    _assert_logits_match(folder, name, images, logits)


def test_hub_era_vit_key_names_load_too(reference, tmp_path):
    """Checkpoints on the Hub predate transformers 5's renaming of ViT modules."""
    _, state, images, logits = reference["vit_b16"]
    old = _rename(state, [
        (r"vit\.layers\.(\d+)\.attention\.(q|k|v)_proj\.(.*)",
         lambda m: f"vit.encoder.layer.{m[1]}.attention.attention."
                   f"{dict(q='query', k='key', v='value')[m[2]]}.{m[3]}"),
        (r"vit\.layers\.(\d+)\.attention\.o_proj\.(.*)",
         r"vit.encoder.layer.\1.attention.output.dense.\2"),
        (r"vit\.layers\.(\d+)\.mlp\.fc1\.(.*)", r"vit.encoder.layer.\1.intermediate.dense.\2"),
        (r"vit\.layers\.(\d+)\.mlp\.fc2\.(.*)", r"vit.encoder.layer.\1.output.dense.\2"),
        (r"vit\.layers\.(\d+)\.(layernorm_\w+)\.(.*)", r"vit.encoder.layer.\1.\2.\3"),
        (r"(.*)", r"\1")])
    path = _save_safetensors(old, str(tmp_path / "model.safetensors"))
    _assert_logits_match(path, "vit_b16", images, logits)


# ---- timm / torchvision state dicts ------------------------------------------------------------

_RESNET_TIMM = [
    (r"resnet\.embedder\.embedder\.convolution\.(.*)", r"conv1.\1"),
    (r"resnet\.embedder\.embedder\.normalization\.(.*)", r"bn1.\1"),
    (r"resnet\.encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.convolution\.(.*)",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}.{m[4]}"),
    (r"resnet\.encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.normalization\.(.*)",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}.{m[4]}"),
    (r"resnet\.encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.convolution\.(.*)",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0.{m[3]}"),
    (r"resnet\.encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.normalization\.(.*)",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1.{m[3]}"),
    (r"classifier\.1\.(.*)", r"fc.\1"),
]
_VIT_TIMM = [
    (r"vit\.embeddings\.cls_token", "cls_token"),
    (r"vit\.embeddings\.position_embeddings", "pos_embed"),
    (r"vit\.embeddings\.patch_embeddings\.projection\.(.*)", r"patch_embed.proj.\1"),
    (r"vit\.layers\.(\d+)\.attention\.qkv\.(.*)", r"blocks.\1.attn.qkv.\2"),
    (r"vit\.layers\.(\d+)\.attention\.o_proj\.(.*)", r"blocks.\1.attn.proj.\2"),
    (r"vit\.layers\.(\d+)\.layernorm_before\.(.*)", r"blocks.\1.norm1.\2"),
    (r"vit\.layers\.(\d+)\.layernorm_after\.(.*)", r"blocks.\1.norm2.\2"),
    (r"vit\.layers\.(\d+)\.mlp\.(fc\d)\.(.*)", r"blocks.\1.mlp.\2.\3"),
    (r"vit\.layernorm\.(.*)", r"norm.\1"),
    (r"classifier\.(.*)", r"head.\1"),
]
_VIT_TORCHVISION = [
    (r"vit\.embeddings\.cls_token", "class_token"),
    (r"vit\.embeddings\.position_embeddings", "encoder.pos_embedding"),
    (r"vit\.embeddings\.patch_embeddings\.projection\.(.*)", r"conv_proj.\1"),
    (r"vit\.layers\.(\d+)\.attention\.qkv\.(.*)",
     r"encoder.layers.encoder_layer_\1.self_attention.in_proj_\2"),
    (r"vit\.layers\.(\d+)\.attention\.o_proj\.(.*)",
     r"encoder.layers.encoder_layer_\1.self_attention.out_proj.\2"),
    (r"vit\.layers\.(\d+)\.layernorm_before\.(.*)", r"encoder.layers.encoder_layer_\1.ln_1.\2"),
    (r"vit\.layers\.(\d+)\.layernorm_after\.(.*)", r"encoder.layers.encoder_layer_\1.ln_2.\2"),
    (r"vit\.layers\.(\d+)\.mlp\.fc1\.(.*)", r"encoder.layers.encoder_layer_\1.mlp.0.\2"),
    (r"vit\.layers\.(\d+)\.mlp\.fc2\.(.*)", r"encoder.layers.encoder_layer_\1.mlp.3.\2"),
    (r"vit\.layernorm\.(.*)", r"encoder.ln.\1"),
    (r"classifier\.(.*)", r"heads.head.\1"),
]
_CONVNEXT_TIMM = [
    (r"convnext\.embeddings\.patch_embeddings\.(.*)", r"stem.0.\1"),
    (r"convnext\.embeddings\.layernorm\.(.*)", r"stem.1.\1"),
    (r"convnext\.encoder\.stages\.(\d)\.downsampling_layer\.(\d)\.(.*)",
     r"stages.\1.downsample.\2.\3"),
    (r"convnext\.encoder\.stages\.(\d)\.layers\.(\d+)\.layer_scale_parameter",
     r"stages.\1.blocks.\2.gamma"),
    (r"convnext\.encoder\.stages\.(\d)\.layers\.(\d+)\.dwconv\.(.*)",
     r"stages.\1.blocks.\2.conv_dw.\3"),
    (r"convnext\.encoder\.stages\.(\d)\.layers\.(\d+)\.layernorm\.(.*)",
     r"stages.\1.blocks.\2.norm.\3"),
    (r"convnext\.encoder\.stages\.(\d)\.layers\.(\d+)\.pwconv(\d)\.(.*)",
     r"stages.\1.blocks.\2.mlp.fc\3.\4"),
    (r"convnext\.layernorm\.(.*)", r"head.norm.\1"),
    (r"classifier\.(.*)", r"head.fc.\1"),
]
_CONVNEXT_TORCHVISION = [
    (r"convnext\.embeddings\.patch_embeddings\.(.*)", r"features.0.0.\1"),
    (r"convnext\.embeddings\.layernorm\.(.*)", r"features.0.1.\1"),
    (r"convnext\.encoder\.stages\.(\d)\.downsampling_layer\.(\d)\.(.*)",
     lambda m: f"features.{2 * int(m[1])}.{m[2]}.{m[3]}"),
    (r"convnext\.encoder\.stages\.(\d)\.layers\.(\d+)\.layer_scale_parameter",
     lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.layer_scale"),
    (r"convnext\.encoder\.stages\.(\d)\.layers\.(\d+)\.(dwconv|layernorm|pwconv1|pwconv2)\.(.*)",
     lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.block."
               f"{dict(dwconv=0, layernorm=2, pwconv1=3, pwconv2=5)[m[3]]}.{m[4]}"),
    (r"convnext\.layernorm\.(.*)", r"classifier.0.\1"),
    (r"classifier\.(.*)", r"classifier.2.\1"),
]


# timm/torchvision ViTs use LayerNorm epsilon 1e-6; the reference has Hugging Face's 1e-12,
# which matters at 1e-4 for randomly initialised (small-variance) features.
_EPS = {"vit_b16": {"layer_norm_eps": 1e-12}}


def _vit_fused(state):
    return _fuse_qkv(state, r"vit\.layers\.(\d+)\.attention\.{p}_proj\.(weight|bias)",
                     r"vit.layers.\1.attention.qkv.\2")


def test_timm_state_dicts_match(reference, tmp_path):
    for name, rules, prepare in (("resnet50", _RESNET_TIMM, dict),
                                 ("vit_b16", _VIT_TIMM, _vit_fused),
                                 ("convnext_tiny", _CONVNEXT_TIMM, dict)):
        _, state, images, logits = reference[name]
        timm_state = _rename(prepare(state), rules)
        path = _save_pth(timm_state, str(tmp_path / f"{name}.pth"))  # weights_only reader
        assert weights.read(path, name).layout in ("timm", "torchvision")
        _assert_logits_match(path, name, images, logits, **_EPS.get(name, {}))


def test_torchvision_state_dicts_match(reference, tmp_path):
    for name, rules, prepare in (("vit_b16", _VIT_TORCHVISION, _vit_fused),
                                 ("convnext_tiny", _CONVNEXT_TORCHVISION, dict)):
        _, state, images, logits = reference[name]
        tv_state = _rename(prepare(state), rules)
        if name == "convnext_tiny":  # torchvision keeps layer scale as [C, 1, 1]
            tv_state = {k: v[:, None, None] if k.endswith("layer_scale") else v
                        for k, v in tv_state.items()}
        path = _save_safetensors(tv_state, str(tmp_path / f"{name}.safetensors"))
        assert weights.read(path, name).layout == "torchvision"
        _assert_logits_match(path, name, images, logits, **_EPS.get(name, {}))


def _big_vision_npz(state, path, heads=12):
    """The ViT tensors as the AugReg .npz files lay them out (flax kernels, heads split)."""
    d = state["vit.embeddings.cls_token"].shape[-1]
    out = {"cls": state["vit.embeddings.cls_token"],
           "Transformer/posembed_input/pos_embedding": state["vit.embeddings.position_embeddings"],
           "embedding/kernel":
               state["vit.embeddings.patch_embeddings.projection.weight"].transpose(2, 3, 1, 0),
           "embedding/bias": state["vit.embeddings.patch_embeddings.projection.bias"],
           "Transformer/encoder_norm/scale": state["vit.layernorm.weight"],
           "Transformer/encoder_norm/bias": state["vit.layernorm.bias"],
           "head/kernel": state["classifier.weight"].T, "head/bias": state["classifier.bias"]}
    for i in range(12):
        hf, bv = f"vit.layers.{i}.", f"Transformer/encoderblock_{i}/"
        for ours, theirs in (("LayerNorm_0", "layernorm_before"), ("LayerNorm_2",
                                                                   "layernorm_after")):
            out[f"{bv}{ours}/scale"] = state[f"{hf}{theirs}.weight"]
            out[f"{bv}{ours}/bias"] = state[f"{hf}{theirs}.bias"]
        for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            w = state[f"{hf}attention.{theirs}.weight"]
            out[f"{bv}MultiHeadDotProductAttention_1/{ours}/kernel"] = w.T.reshape(d, heads, -1)
            out[f"{bv}MultiHeadDotProductAttention_1/{ours}/bias"] = \
                state[f"{hf}attention.{theirs}.bias"].reshape(heads, -1)
        w = state[f"{hf}attention.o_proj.weight"]
        out[f"{bv}MultiHeadDotProductAttention_1/out/kernel"] = w.T.reshape(heads, -1, d)
        out[f"{bv}MultiHeadDotProductAttention_1/out/bias"] = state[f"{hf}attention.o_proj.bias"]
        for k in (0, 1):
            out[f"{bv}MlpBlock_3/Dense_{k}/kernel"] = state[f"{hf}mlp.fc{k + 1}.weight"].T
            out[f"{bv}MlpBlock_3/Dense_{k}/bias"] = state[f"{hf}mlp.fc{k + 1}.bias"]
    np.savez(path, **out)
    return path


def test_big_vision_npz_matches_and_carries_its_preprocessing(reference, tmp_path):
    _, state, images, logits = reference["vit_b16"]
    path = _big_vision_npz(state, str(tmp_path / "augreg.npz"))
    ckpt = weights.read(path, "vit_b16")
    assert ckpt.layout == "big_vision"
    assert ckpt.preprocessing["mean"] == (0.5, 0.5, 0.5)  # AugReg ViTs take [-1, 1]
    assert ckpt.model_kwargs["gelu_approximate"]  # as big_vision trains them
    # The reference is a transformers ViT: exact GELU.
    _assert_logits_match(path, "vit_b16", images, logits, gelu_approximate=False,
                         **_EPS["vit_b16"])


# ---- conventions, errors, new heads -------------------------------------------------------------

def test_preprocessing_and_model_fields_travel_with_hugging_face_weights(reference):
    folder = reference["vit_b16"][0]
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                   "do_center_crop": False}, f)
    ckpt = weights.read(folder, "vit_b16")
    assert ckpt.preprocessing == {"mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_frac": 1.0}
    assert ckpt.model_kwargs["layer_norm_eps"] == 1e-12
    assert weights.read(reference["resnet50"][0], "resnet50").preprocessing["mean"] == \
        (0.485, 0.456, 0.406)


def test_mismatched_weights_list_missing_and_unexpected_keys(reference, tmp_path):
    _, state, _, _ = reference["resnet50"]
    broken = {k.replace("layer.2.", "layer.9."): v for k, v in state.items()}
    path = _save_safetensors(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ValueError) as e:
        weights.load(path, "resnet50")
    message = str(e.value)
    assert "missing from the checkpoint (80)" in message and "Conv_2/kernel" in message
    assert "unexpected in the checkpoint (80)" in message and "Conv_9/kernel" in message
    with pytest.raises(ValueError, match="shape mismatch.*stem_conv/kernel"):
        weights.load(reference["resnet50"][0], "resnet50", width=32)


def test_new_head_for_other_classes_keeps_the_backbone(reference):
    folder, _, images, _ = reference["resnet50"]
    model, variables = weights.load(folder, "resnet50", num_classes=7, seed=3)
    _, full = weights.load(folder, "resnet50")
    assert model.num_classes == 7 and variables["params"]["head"]["kernel"].shape == (2048, 7)
    for key in ("stem_conv", "stage4_block3"):
        for a, b in zip(jax.tree.leaves(variables["params"][key]),
                        jax.tree.leaves(full["params"][key]), strict=True):
            np.testing.assert_array_equal(a, b)


def test_vit_loads_at_a_new_resolution(reference):
    folder, _, images, _ = reference["vit_b16"]
    model, variables = weights.load(folder, "vit_b16", image_size=64)
    assert variables["params"]["pos_embedding"].shape == (1, 1 + 16, 768)
    assert model.apply(variables, jnp.zeros((1, 64, 64, 3))).shape == (1, 1000)


@pytest.mark.slow
def test_convert_cli_writes_a_checkpoint_load_reads(reference, tmp_path):
    folder, _, images, logits = reference["convnext_tiny"]
    dst = str(tmp_path / "converted")
    out = subprocess.run([sys.executable, "-m", "jaxcls.weights", "convert", folder, dst,
                          "--model=convnext_tiny"], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["source_layout"] == "hf" and report["params"] == 28_589_128
    assert weights.read(dst, "convnext_tiny").layout == "jaxcls"
    _assert_logits_match(dst, "convnext_tiny", images, logits)
    with pytest.raises(ValueError, match="holds 'convnext_tiny' weights"):
        weights.read(dst, "resnet50")
