"""Explanations: on a synthetic task whose answer is known (the colour of a square at a random
place sets the class), Grad-CAM and Grad-CAM++ of a trained tiny ResNet point at the square;
integrated gradients satisfy completeness; attention rollout of a tiny ViT equals a NumPy
reference on the sown attention weights."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from jaxcls import calibration, evaluate, explain, lime, models, predict, train
from jaxcls.data import augment

SIZE = 16
COLOURS = {"red": (230, 40, 40), "blue": (40, 40, 230)}


def _squares(n: int, seed: int):
    """uint8 images [n, 16, 16, 3] of dim noise with a 4x4 red or blue square (the class) at a
    random place; labels ("red"/"blue"); whether the square is in the left half."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.choice(list(COLOURS), n)
    left = rng.random(n) < 0.5
    for i in range(n):
        x = rng.integers(0, 5) + (0 if left[i] else 8)
        y = rng.integers(0, SIZE - 3)
        pixels[i, y:y + 4, x:x + 4] = COLOURS[labels[i]]
    return pixels, labels, left


def _write_split(root: str, split: str, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    pixels, labels, left = _squares(n, seed)
    paths = []
    for i, (img, label) in enumerate(zip(pixels, labels, strict=True)):
        os.makedirs(os.path.join(root, split, label), exist_ok=True)
        paths.append(os.path.join(root, split, label, f"{split}{i:03d}.png"))
        Image.fromarray(img).save(paths[-1])
    return paths, left


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A width-8 two-stage ResNet trained on the squares folder for 30 steps through
    train.run, loaded back from its workdir as `python -m jaxcls.explain` does."""
    root = str(tmp_path_factory.mktemp("squares"))
    _write_split(root, "train", 320, seed=0)
    paths, left = _write_split(root, "test", 48, seed=1)
    workdir = os.path.join(root, "run")
    train.run(tiny_config(dataset=f"folder:{root}", image_size=SIZE, num_steps=30,
                          optimizer="adamw", learning_rate=3e-3, log_every_steps=20), workdir)
    run = evaluate.load_run(workdir, "last")
    pixels = np.stack([np.asarray(Image.open(p)) for p in paths])
    x = augment.normalize(jnp.asarray(pixels), run.config.mean, run.config.std)
    labels = np.array([run.class_names.index(os.path.basename(os.path.dirname(p)))
                       for p in paths])
    return {"run": run, "paths": paths, "left": left, "x": x, "labels": labels}


def _maps(trained, method: str, classes=None, baseline=None, **kwargs):
    """Maps of the test images for `classes` (default: their labels); `baseline` [1, 1, 1, 3]
    normalised (default: 0, the mean colour)."""
    run = trained["run"]
    model = explain.explainable_model(run.model)
    layers = explain.spatial_layers(model, run.variables, (SIZE, SIZE, 3))
    fn = explain.make_explainer(model, method, explain.default_layer(layers), **kwargs)
    classes = trained["labels"] if classes is None else classes
    baseline = jnp.zeros((1, 1, 1, 3)) if baseline is None else baseline
    return jax.device_get(fn(run.variables, trained["x"], jnp.asarray(classes), baseline))


def _localised(heat: np.ndarray, left: np.ndarray) -> float:
    """Fraction of maps with more mass in the coloured square's half than in the other."""
    half = heat.shape[-1] // 2
    mass_left, mass_right = heat[..., :half].sum((1, 2)), heat[..., half:].sum((1, 2))
    return float(np.mean(np.where(left, mass_left > mass_right, mass_right > mass_left)))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cam_points_at_the_square_that_sets_the_class(trained, method):
    out = _maps(trained, method)
    accuracy = np.mean(np.argmax(out["logits"], -1) == trained["labels"])
    assert accuracy >= 0.9, f"the model did not learn the task (accuracy {accuracy})"
    assert out["map"].shape == (48, SIZE // 2, SIZE // 2)
    assert _localised(out["map"], trained["left"]) >= 0.9


def test_lime_points_at_the_square_that_sets_the_class(trained):
    # Off superpixels black, like the squares' dim background (the command's default; the
    # mean colour fill is far from every training image of this toy task).
    config = trained["run"].config
    black = augment.normalize(jnp.zeros((1, 1, 1, 3), jnp.uint8), config.mean, config.std)
    out = _maps(trained, "lime", baseline=black, samples=200, segments=16)
    assert out["map"].shape == (48, SIZE, SIZE)
    # The superpixel with the largest weight lies on the coloured square.
    pixels = np.stack([np.asarray(Image.open(p)) for p in trained["paths"]])
    square = pixels.max(-1) > 100
    on_square = [sq.reshape(-1)[np.argmax(m)] for m, sq in zip(out["map"], square, strict=True)]
    assert np.mean(on_square) >= 0.9, np.mean(on_square)


def test_lime_surrogate_recovers_a_linear_score():
    z = lime.patterns(12, 800, seed=1)
    assert z[0].all() and 0.4 < z[1:].mean() < 0.6
    w = np.linspace(-1, 1, 12)
    fit = lime.surrogate(z, z @ w + 0.3)
    np.testing.assert_allclose(fit["weights"], w, atol=0.02)
    assert fit["intercept"] == pytest.approx(0.3, abs=0.05) and fit["r2"] > 0.99
    labels = lime.superpixels(np.random.default_rng(0).random((16, 16, 3)), 8)
    assert labels.min() == 0 and labels.max() == len(np.unique(labels)) - 1
    image = jnp.ones((16, 16, 3))
    off = np.asarray(lime.masked(image, jnp.asarray(labels), jnp.zeros((1, labels.max() + 1)),
                                 jnp.full(3, -2.0)))
    assert np.all(off == -2.0)


def test_gradcam_at_the_last_block_is_the_class_activation_map(trained):
    """After the last block come global average pooling and the head: d logit_c / dA = W_c / hw
    at every position, so the probe's gradient and Grad-CAM have closed forms (CAM)."""
    run = trained["run"]
    model = explain.explainable_model(run.model)
    classes = jnp.asarray(trained["labels"][:8])
    activation, grads = jax.jit(lambda v, x, c: explain.layer_gradients(
        model, v, x, "stage2_block1", c))(run.variables, trained["x"][:8], classes)
    kernel = np.asarray(run.variables["params"]["head"]["kernel"])  # [C_features, classes]
    hw = activation.shape[1] * activation.shape[2]
    expected = kernel.T[np.asarray(classes)][:, None, None, :] / hw
    np.testing.assert_allclose(grads, np.broadcast_to(expected, grads.shape), rtol=1e-5,
                               atol=1e-8)
    cam = np.maximum(np.einsum("nhwk,nk->nhw", activation, expected[:, 0, 0]), 0)
    np.testing.assert_allclose(explain.grad_cam(activation, grads), cam, rtol=1e-5, atol=1e-6)


def test_integrated_gradients_completeness(trained):
    """sum(attributions) = score(x) - score(baseline) up to the trapezoid rule's error."""
    run = trained["run"]
    model = explain.explainable_model(run.model)
    x, classes = trained["x"][:6], jnp.asarray(trained["labels"][:6])
    baseline = augment.normalize(jnp.zeros((1, 1, 1, 3), jnp.uint8), run.config.mean,
                                 run.config.std)
    attributions = jax.jit(lambda v, x, c, b: explain.integrated_gradients(
        model, v, x, c, b, 64))(run.variables, x, classes, baseline)
    apply = jax.jit(model.apply)
    logits, base_logits = apply(run.variables, x), apply(run.variables,
                                                         jnp.broadcast_to(baseline, x.shape))
    gap = (jnp.take_along_axis(logits, classes[:, None], 1)
           - jnp.take_along_axis(base_logits, classes[:, None], 1))[:, 0]
    np.testing.assert_allclose(attributions.sum((1, 2, 3)), gap, rtol=0.02,
                               atol=0.02 * float(jnp.abs(gap).max()))


def test_command_writes_the_maps_it_computes(trained, tmp_path):
    run, paths = trained["run"], trained["paths"][:3]
    records = explain.explain_files(run, paths, "gradcam", str(tmp_path), target=-1,
                                    png_size=32, batch_size=2)
    predicted = [run.class_names.index(r["predicted"]) for r in records]
    classes = np.array(predicted + [0] * (len(trained["labels"]) - len(predicted)))
    reference = _maps(trained, "gradcam", classes)["map"]  # target=-1: the predicted class
    for i, r in enumerate(records):
        assert r["path"] == paths[i] and r["class"] == r["predicted"]
        saved = np.load(r["npy"])
        np.testing.assert_allclose(saved, reference[i], rtol=1e-4, atol=1e-6)
        # The PNG: a title band, then the image and the overlay side by side, pixel for pixel,
        # and a colour bar.
        png, pad = np.asarray(Image.open(r["png"])), explain.PANEL_PAD
        height = explain.PANEL_TITLE + 32 + pad
        assert png.shape == (height, 4 * pad + 64 + explain.PANEL_BAR + explain.PANEL_TICKS, 3)
        image = np.asarray(Image.open(paths[i]).resize((32, 32), Image.BICUBIC))
        np.testing.assert_array_equal(png[height - pad - 32:height - pad, pad:pad + 32], image)
        np.testing.assert_array_equal(png[height - pad - 32:height - pad, 2 * pad + 32:
                                          2 * pad + 64],
                                      explain.overlay(np.asarray(Image.open(paths[i])), saved,
                                                      size=32))
    assert explain.panel_title(records[0], "gradcam") == (
        f"{records[0]['class']} {records[0]['class_probability']:.3f} (gradcam)")
    other = {**records[0], "class": "x", "class_probability": 0.1}
    assert explain.panel_title(other, "gradcam") == (
        f"map of x 0.100 (gradcam); predicted {records[0]['predicted']} "
        f"{records[0]['probability']:.3f}")


def test_explain_prints_the_probability_predict_prints(trained, tmp_path):
    """One convention: both apply the temperature evaluate stored for the checkpoint."""
    run, paths = trained["run"], trained["paths"][:3]
    calibration.save(run.step_dir, "", {"temperature": 2.5})
    try:
        records = explain.explain_files(run, paths, "gradcam", str(tmp_path), png_size=32)
        predicted = list(predict.predict([run.workdir], paths, top_k=1, which="last",
                                         progress=False))
    finally:
        os.remove(os.path.join(run.step_dir, calibration.FILENAME))
    for r, p in zip(records, predicted, strict=True):
        assert r["temperature"] == 2.5 and p["top_k"][0][0] == r["predicted"]
        assert r["probability"] == pytest.approx(p["top_k"][0][1], abs=1e-5)
    # and T = 2.5 was applied: softmax(logits / 2.5) differs from the uncalibrated answer
    plain = explain.explain_files(run, paths[:1], "gradcam", str(tmp_path), png_size=32)[0]
    assert plain["temperature"] == 1.0 and plain["probability"] > records[0]["probability"]


def test_default_layer_and_errors_naming_the_bad_layer_or_method(trained, tmp_path):
    run, paths = trained["run"], trained["paths"][:1]
    with pytest.raises(ValueError, match=r"valid module paths: \[.*'stage2_block1'"):
        explain.explain_files(run, paths, "gradcam", str(tmp_path), layer="stage9_block1")
    with pytest.raises(ValueError, match=r"--layer='stage2_block1' applies to gradcam"):
        explain.explain_files(run, paths, "integrated_gradients", str(tmp_path),
                              layer="stage2_block1")
    with pytest.raises(ValueError, match=r"'rollout' does not apply to a ResNet.*'gradcam'"):
        explain.explain_files(run, paths, "rollout", str(tmp_path))
    with pytest.raises(ValueError, match=r"--class='green'.*\['blue', 'red'\]"):
        explain.parse_class("green", run.class_names)
    convnext = models.create("convnext_atto", 2, depths=(1, 1, 1, 2), dims=(8, 8, 8, 8))
    variables = jax.eval_shape(convnext.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert explain.default_layer(explain.spatial_layers(convnext, variables, (32, 32, 3))) == (
        "stage4_block2")
    vit_model = models.create("vit_ti4", 2, width=16, depth=1, num_heads=2, mlp_dim=32)
    with pytest.raises(ValueError, match=r"'gradcam' does not apply to a ViT.*'rollout'"):
        explain.check_method(vit_model, "gradcam")


def _rollout_reference(weights: list[np.ndarray]) -> np.ndarray:
    """Abnar & Zuidema's rollout, one example and one matrix product at a time."""
    n, _, t, _ = weights[0].shape
    out = np.zeros((n, t, t))
    for i in range(n):
        r = np.eye(t)
        for w in weights:
            a = 0.5 * w[i].astype(np.float64).mean(0) + 0.5 * np.eye(t)
            a = a / a.sum(-1, keepdims=True)
            r = a @ r
        out[i] = r
    return out


def test_rollout_matches_a_numpy_reference():
    model = models.create("vit_ti4", 3, width=32, depth=3, num_heads=4, mlp_dim=64)
    x = jax.random.normal(jax.random.key(0), (2, SIZE, SIZE, 3))
    # Random parameters of the right shapes, large enough that attention is far from uniform
    # (and nothing to compile for an init).
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape), s.dtype),
                             jax.eval_shape(model.init, jax.random.key(0), x))

    @jax.jit
    def forward(v, x):
        explicit, _ = model.apply(v, x, mutable=["intermediates"])
        return model.apply(v, x), explicit, explain.attention_weights(model, v, x)

    fast, explicit, weights = jax.device_get(forward(variables, x))
    np.testing.assert_allclose(explicit, fast, rtol=1e-5, atol=1e-5)  # sowing changes nothing
    assert [w.shape for w in weights] == [(2, 4, 17, 17)] * 3
    for w in weights:
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
        assert w.max() > 0.5  # not uniform: the comparison below means something
    rolled = explain.rollout([jnp.asarray(w) for w in weights])
    reference = _rollout_reference(weights)
    np.testing.assert_allclose(rolled, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rolled.sum(-1), 1.0, rtol=1e-5)
    out = jax.device_get(explain.make_explainer(model, "rollout")(
        variables, x, jnp.full(2, -1), jnp.zeros(())))
    np.testing.assert_allclose(out["map"], reference[:, 0, 1:].reshape(2, 4, 4), rtol=1e-5,
                               atol=1e-6)
    # pool="gap" averages all (patch) tokens, so its map is the mean row of the rollout.
    np.testing.assert_allclose(explain.rollout_map(model.clone(pool="gap"), rolled[:, 1:, 1:]),
                               reference[:, 1:, 1:].mean(1).reshape(2, 4, 4), rtol=1e-5)


FAST_COMPILE = {"xla_backend_optimization_level": 0}  # half the compile time of small models


def _random_variables(model, x, scale: float = 0.5):
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, scale, s.shape), s.dtype),
                        jax.eval_shape(model.init, jax.random.key(0), x))


def test_distilled_deit_rollout_reads_both_prefix_tokens():
    """A distilled DeiT's logits average its class and distillation tokens: its map is the mean
    of their rollout rows over the patch tokens (after the two prefix tokens)."""
    model = models.create("deit_tiny_distilled_patch16_224", 3, patch_size=4, width=32, depth=2,
                          num_heads=4, mlp_dim=64)
    x = jax.random.normal(jax.random.key(0), (2, SIZE, SIZE, 3))
    variables = _random_variables(model, x)
    assert explain.methods_for(model) == ("rollout", "integrated_gradients", "lime")
    explainer = explain.make_explainer(model, "rollout")
    weights, out = jax.device_get(jax.jit(lambda v, x: (  # one compile for both
        explain.attention_weights(model, v, x), explainer(v, x, jnp.full(2, -1), jnp.zeros(()))),
        compiler_options=FAST_COMPILE)(variables, x))
    assert [w.shape for w in weights] == [(2, 4, 18, 18)] * 2  # cls, dist, 16 patches
    reference = _rollout_reference(weights)
    np.testing.assert_allclose(out["map"], reference[:, :2, 2:].mean(1).reshape(2, 4, 4),
                               rtol=1e-5, atol=1e-6)


def test_swin_gradcam_default_layer_is_the_final_norm_map():
    """Swin's Grad-CAM default is its final LayerNorm, the last stage's map [N, h, w, C]; after
    it come the mean over positions and the head, so d logit_c / dA = W_c / hw (CAM)."""
    model = models.create("swin_tiny_patch4_window7_224", 3, embed_dim=8, depths=(1, 1),
                          num_heads=(1, 2), window_size=4)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = _random_variables(model, x, 0.3)
    assert explain.methods_for(model)[0] == "gradcam"
    layers = explain.spatial_layers(model, variables, (32, 32, 3))
    assert explain.default_layer(layers) == "norm"
    classes = jnp.asarray([0, 2])
    explainer = explain.make_explainer(model, "gradcam", "norm")
    (activation, grads), out = jax.device_get(jax.jit(lambda v, x: (  # one compile for both
        explain.layer_gradients(model, v, x, "norm", classes),
        explainer(v, x, classes, jnp.zeros(()))), compiler_options=FAST_COMPILE)(variables, x))
    assert activation.shape == (2, 4, 4, 16)  # 32 px / 4 / 2: stage 2's 4x4 map, 16 channels
    kernel = np.asarray(variables["params"]["head"]["kernel"])
    expected = kernel.T[np.asarray(classes)][:, None, None, :] / 16
    np.testing.assert_allclose(grads, np.broadcast_to(expected, grads.shape), rtol=1e-5,
                               atol=1e-7)
    assert out["map"].shape == (2, 4, 4)
    np.testing.assert_allclose(out["map"], explain.grad_cam(activation, grads), rtol=1e-5,
                               atol=1e-7)
