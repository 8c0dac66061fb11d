"""jaxcls.zeroshot end to end, on CLIP weights built so the answer is known: the image tower
embeds an image's mean colour, the text tower embeds the colour word of the prompt."""

import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxcls import train
from jaxcls.clip import tokenizer, weights, zeroshot
from tests.conftest import tiny_config

COLOURS = {"red": (230, 20, 20), "green": (20, 200, 30), "blue": (30, 40, 220)}
WIDTH, PATCH, SIZE = 64, 4, 16  # one attention head of 64; a 4x4 grid of patches


def layer_norm(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / np.sqrt(x.var() + 1e-5)


def colour_vector(rgb) -> np.ndarray:
    """What the image tower below makes of a solid `rgb` image (before its final LayerNorm)."""
    v = np.zeros(WIDTH, np.float32)
    v[:3] = (np.asarray(rgb) / 255 - weights.PREPROCESSING["mean"]) / weights.PREPROCESSING["std"]
    return layer_norm(v)


def known_answer_state_dict() -> dict[str, np.ndarray]:
    """OpenAI-layout tensors: the patch embedding averages each colour channel, attention is
    uniform (zero queries and keys, identity values and output), the MLPs add nothing; so the
    class token ends as the mean of the normalised patch colours. In the text tower only the
    colour words have embeddings (the colour's vector), so the end-of-text token, attending
    uniformly to the prompt before it, ends in that colour's direction."""
    d, eye, zeros = WIDTH, np.eye(WIDTH, dtype=np.float32), np.zeros
    conv = zeros((d, 3, PATCH, PATCH), np.float32)
    for c in range(3):
        conv[c, c] = 1 / PATCH**2
    tok = tokenizer.default()
    embedding = zeros((tok.vocab_size, d), np.float32)
    for name, rgb in COLOURS.items():
        (word,) = tok.encode(name)  # each colour name is one token
        embedding[word] = colour_vector(rgb)
    out = {"visual.conv1.weight": conv, "visual.class_embedding": zeros(d, np.float32),
           "visual.positional_embedding": zeros(((SIZE // PATCH) ** 2 + 1, d), np.float32),
           "visual.proj": eye, "token_embedding.weight": embedding,
           "positional_embedding": zeros((77, d), np.float32), "text_projection": eye,
           "logit_scale": np.array(np.log(4.0), np.float32)}
    for prefix in ("visual.", ""):
        out.update({f"{prefix}{ln}.weight": np.ones(d, np.float32) for ln in (
            ("ln_pre", "ln_post") if prefix else ("ln_final",))})
        out.update({f"{prefix}{ln}.bias": zeros(d, np.float32) for ln in (
            ("ln_pre", "ln_post") if prefix else ("ln_final",))})
        block = f"{prefix}transformer.resblocks.0."
        out.update({
            block + "attn.in_proj_weight": np.concatenate([zeros((2 * d, d)), eye]).astype(
                np.float32),
            block + "attn.in_proj_bias": zeros(3 * d, np.float32),
            block + "attn.out_proj.weight": eye, block + "attn.out_proj.bias": zeros(d, np.float32),
            block + "mlp.c_fc.weight": zeros((4 * d, d), np.float32),
            block + "mlp.c_fc.bias": zeros(4 * d, np.float32),
            block + "mlp.c_proj.weight": zeros((d, 4 * d), np.float32),
            block + "mlp.c_proj.bias": zeros(d, np.float32)})
        for k in (1, 2):
            out[f"{block}ln_{k}.weight"] = np.ones(d, np.float32)
            out[f"{block}ln_{k}.bias"] = zeros(d, np.float32)
    return out


def colour_folder(root, per_class: int = 4) -> list[str]:
    """train/ and test/ folders of noisy solid-colour PNGs, classes named c0, c1, c2."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for i, rgb in enumerate(COLOURS.values()):
            os.makedirs(root / split / f"c{i}")
            for j in range(per_class):
                img = np.clip(np.asarray(rgb) + rng.integers(-25, 26, (SIZE, SIZE, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(root / split / f"c{i}" / f"{j}.png")
    return [f"c{i}" for i in range(len(COLOURS))]


def test_zeroshot_and_zeroshot_head_classify_colours_by_their_names(tmp_path):
    from safetensors.numpy import save_file

    save_file(known_answer_state_dict(), str(tmp_path / "clip.safetensors"))
    folders = colour_folder(tmp_path / "data")
    out = tmp_path / "out"
    # What `python -m jaxcls.zeroshot --weights=W --dataset=folder:D --classes=red,green,blue`
    # runs (its flag handling is in tests/test_cli.py).
    result = zeroshot.run(str(tmp_path / "clip.safetensors"), f"folder:{tmp_path / 'data'}",
                          str(out), classes=",".join(COLOURS), batch_size=8)
    assert result["accuracy"] == 1.0 and result["examples"] == 12
    metrics = json.loads((out / "eval" / "test" / "metrics.json").read_text())
    assert metrics["accuracy"] == 1.0 and metrics["method"]["num_templates"] == 18
    assert metrics["method"]["prompt_class_names"] == list(COLOURS)
    pred = np.load(out / "eval" / "test" / "predictions.npz")
    assert pred["class_names"].tolist() == folders  # the dataset's names, not the prompts'
    np.testing.assert_array_equal(pred["probs"].argmax(1), pred["labels"])
    assert pred["probs"].max(1).min() > 0.9  # cosine 1 vs < 0.6, times logit_scale 4
    assert (out / "eval" / "test" / "report.html").exists()
    vectors = np.load(out / "class_vectors.npy")
    expected = [v / np.linalg.norm(v) for v in map(colour_vector, COLOURS.values())]
    np.testing.assert_allclose(vectors.T, expected, atol=1e-5)

    # The image tower fine-tuned as a jaxcls classifier, its head the zero-shot classifier,
    # with WiSE-FT evaluations: alpha 0 is the zero-shot model (the command's loss), alpha 1
    # the fine-tuned one (the run's own eval).
    config = tiny_config(
        dataset=f"folder:{tmp_path / 'data'}", image_size=SIZE, model="clip_vit_b16",
        init_from=str(tmp_path / "clip.safetensors"), init_head="zeroshot",
        zeroshot_classes=",".join(COLOURS), wise_ft_alphas=(0.0, 1.0), batch_size=4,
        num_steps=3, learning_rate=0.5)
    config.model_kwargs = ml_collections.ConfigDict(dict(
        width=WIDTH, depth=1, num_heads=1, mlp_dim=4 * WIDTH, patch_size=PATCH,
        projection=WIDTH))
    summary = train.run(config, str(tmp_path / "run"))
    zero_shot, fine_tuned = (summary["final_eval_wise_ft"][a] for a in ("0", "1"))
    assert zero_shot["accuracy"] == 1.0
    assert 1e-4 < zero_shot["loss"] == pytest.approx(metrics["log_loss"], rel=1e-3)
    assert fine_tuned == summary["final_eval"] and fine_tuned["loss"] != zero_shot["loss"]


def test_templates_and_class_names():
    assert len(zeroshot.templates("cifar10")) == 18
    assert len(zeroshot.templates("imagenet")) == 80
    assert zeroshot.prompt_names(["sweet_pepper", "cat"]) == ["sweet pepper", "cat"]
    assert zeroshot.prompt_names(["a", "b"], "apple, bee") == ["apple", "bee"]
    with pytest.raises(ValueError, match="2 classes"):
        zeroshot.prompt_names(["a", "b"], "x,y,z")
    with pytest.raises(FileNotFoundError, match="neither"):
        zeroshot.templates("cifar100")


def test_template_file(tmp_path):
    (tmp_path / "t.txt").write_text("a {} here\n\nthe {} there\n")
    assert zeroshot.templates(str(tmp_path / "t.txt")) == ["a {} here", "the {} there"]
    (tmp_path / "bad.txt").write_text("no slot\n")
    with pytest.raises(ValueError, match="no slot"):
        zeroshot.templates(str(tmp_path / "bad.txt"))
