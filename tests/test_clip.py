"""jaxcls.clip: token ids equal open_clip's; both towers equal open_clip's and Hugging Face's
CLIPModel (randomly initialised, tiny) within 1e-4 relative, through their saved files."""

import jax
import numpy as np
import pytest

from jaxcls import weights as jax_weights
from jaxcls.clip import model as clip_model
from jaxcls.clip import tokenizer, weights
from jaxcls.probe import features

PROMPTS = [
    "a photo of a cat.",
    "A Photo of THE big Dog!!",
    "an   image\twith \n odd   whitespace",
    "numbers 1234 and 3.14159, 2nd place; 100% sure?",
    "it's what they'll've done, isn't it",
    "punctuation... (parens) [brackets] {braces} <angles> --dashes-- @#$%^&*",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber stra\u00dfe",
    "emoji \U0001f600 and \u4e2d\u6587 characters",
    "html &amp; entities &lt;b&gt;",
    "a photo of a " + "very " * 100 + "long prompt that is cut at 77 tokens",
    "",
]


def rel_err(ours, ref) -> float:
    """The largest row-wise ||ours - ref|| / ||ref||."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.linalg.norm(ours - ref, axis=-1) / np.linalg.norm(ref, axis=-1)))


def test_token_ids_equal_open_clip():
    import open_clip

    ours = tokenizer.default()(PROMPTS)
    ref = open_clip.tokenize(PROMPTS).numpy()
    assert ours.shape == ref.shape == (len(PROMPTS), 77) and ours.dtype == np.int32
    np.testing.assert_array_equal(ours, ref)
    tok = tokenizer.default()
    assert ours[-2, -1] == tok.eot == 49407 and ours[-1, :3].tolist() == [tok.sot, tok.eot, 0]
    assert tok.vocab_size == 49408


def _images_and_tokens(size: int):
    images = np.asarray(jax.random.normal(jax.random.key(0), (3, size, size, 3)), np.float32)
    return images, tokenizer.default()(PROMPTS[:4])


def test_towers_equal_open_clip_from_its_state_dict(tmp_path):
    import open_clip
    import torch
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    ref = open_clip.model.CLIP(
        embed_dim=32, quick_gelu=True,
        vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))
    ref.eval()
    # open_clip initialises the LayerNorms to the identity: randomise them so they are tested.
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if ".ln" in name or name.startswith(("ln_", "visual.ln")):
                p.add_(0.1 * torch.randn_like(p))
    torch.save(ref.state_dict(), tmp_path / "tiny.pt")
    model, variables, pre = weights.load(str(tmp_path / "tiny.pt"), vision_heads=2,
                                         text_heads=2)
    assert model.image.image_size == 32 and model.text.num_heads == 2 and model.image.quick_gelu
    assert pre["mean"][0] == pytest.approx(0.48145466)
    images, tokens = _images_and_tokens(32)
    with torch.no_grad():
        ref_img = ref.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
        ref_txt = ref.encode_text(torch.from_numpy(tokens).long()).numpy()
    assert rel_err(model.apply(variables, images, method="encode_image"), ref_img) < 1e-4
    assert rel_err(model.apply(variables, tokens, method="encode_text"), ref_txt) < 1e-4
    # The image tower as a jaxcls classifier (clip_vit_*, here shrunk): its head's input is
    # the unit image embedding.
    vit_model, vit_variables = jax_weights.load(
        str(tmp_path / "tiny.pt"), "clip_vit_b16", num_classes=5, width=64, depth=2,
        num_heads=2, mlp_dim=256, patch_size=8, projection=32)
    feats = features.head_inputs(vit_model, vit_variables, images)
    assert rel_err(feats, ref_img / np.linalg.norm(ref_img, axis=1, keepdims=True)) < 1e-4
    logits = model.apply(variables, images, tokens)
    np.testing.assert_allclose(logits, ref.logit_scale.exp().item() * (
        ref_img / np.linalg.norm(ref_img, axis=1, keepdims=True)) @ (
        ref_txt / np.linalg.norm(ref_txt, axis=1, keepdims=True)).T, rtol=1e-4, atol=1e-4)


def test_towers_equal_hugging_face_clipmodel_from_its_folder(tmp_path):
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    tower = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, hidden_act="gelu")
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=49408, max_position_embeddings=77,
                         eos_token_id=49407, bos_token_id=49406),
        vision_config=dict(tower, image_size=32, patch_size=8), projection_dim=48)
    ref = CLIPModel(config).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    ref.save_pretrained(tmp_path / "hf")
    model, variables, _ = weights.load(str(tmp_path / "hf"))
    assert model.image.num_heads == 4 and not model.text.quick_gelu  # from config.json
    images, tokens = _images_and_tokens(32)
    with torch.no_grad():
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
        ref_img = ref.get_image_features(pixel_values=pixels)
        ref_txt = ref.get_text_features(input_ids=torch.from_numpy(tokens).long())
    ref_img, ref_txt = (getattr(r, "pooler_output", r).numpy() for r in (ref_img, ref_txt))
    assert rel_err(model.apply(variables, images, method="encode_image"), ref_img) < 1e-4
    assert rel_err(model.apply(variables, tokens, method="encode_text"), ref_txt) < 1e-4


@pytest.mark.parametrize("name,count", [("ViT-B-32", 151_277_313), ("ViT-B-16", 149_620_737),
                                        ("ViT-L-14", 427_616_513), ("RN50", 102_007_137)])
def test_configs_have_open_clip_parameter_counts(name, count):
    # open_clip's state dicts of these models hold `count` floats besides BatchNorm statistics
    # (counted here with open_clip 3.3.0, logit_scale included).
    model = clip_model.create(name)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 224, 224, 3)),
                            np.zeros((1, 77), np.int32))
    assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"])) == count
    with pytest.raises(ValueError, match="known"):
        clip_model.create("ViT-X-1")



@pytest.mark.slow
def test_rn50_tower_equals_open_clip_modified_resnet(tmp_path):
    import open_clip
    import torch
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    ref = open_clip.model.CLIP(
        embed_dim=32, quick_gelu=True,
        vision_cfg=CLIPVisionCfg(layers=(1, 2, 1, 1), width=16, image_size=64),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=1))
    with torch.no_grad():  # BatchNorm statistics and scales that are not the identity
        for name, b in ref.visual.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn_like(b))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand_like(b))
        for name, p in ref.visual.named_parameters():
            if ".bn" in name or name.startswith("bn"):
                p.add_(0.1 * torch.randn_like(p))
    ref.eval()
    torch.save(ref.state_dict(), tmp_path / "rn.pt")
    model, variables, _ = weights.load(str(tmp_path / "rn.pt"), text_heads=2)
    assert model.image.stage_sizes == (1, 2, 1, 1) and model.image.num_heads == 8
    images, tokens = _images_and_tokens(64)
    with torch.no_grad():
        ref_img = ref.encode_image(torch.from_numpy(images.copy()).permute(0, 3, 1, 2)).numpy()
    assert rel_err(model.apply(variables, images, method="encode_image"), ref_img) < 1e-4
