"""Model families: published parameter counts and GMACs, ViT/ConvNeXt options, and the CPU conv
gradient against XLA's own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcls import models
from jaxcls.models import __main__ as models_main
from jaxcls.models import conv, layers, vit
from jaxcls.models.conv import conv_general_dilated


@pytest.mark.parametrize("name,count", [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
    ("resnet101", 44_549_160), ("resnet152", 60_192_808)])
def test_parameter_counts_match_torchvision(name, count):
    model = models.create(name, 1000)
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False))
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) == count


@pytest.mark.parametrize("name,count,gmacs,printed", [
    ("resnet50", 25_557_032, 4.1, 4.09), ("vit_b16", 86_567_656, 17.6, 17.56),
    ("convnext_tiny", 28_589_128, 4.5, 4.46)])
def test_published_parameters_and_gmacs_at_224(name, count, gmacs, printed):
    c = models_main.count(name, 224)
    assert c["params"] == count
    assert abs(c["gmacs"] - gmacs) / gmacs < 0.03, c  # timm's figures, rounded to 0.1
    assert round(c["gmacs"], 2) == printed  # what the README quotes
    # `python -m jaxcls.models` prints these recorded figures rather than tracing again.
    assert models_main.FIGURES[name] == (count, round(c["gmacs"], 4), 224,
                                         models_main.fingerprint(name))


@pytest.mark.slow
def test_every_recorded_figure_matches_a_fresh_count():
    # EfficientNet, MobileNet, RegNet, CoAtNet, Swin, DeiT: every variant is counted (and
    # checked against timm) in tests/test_zoo_mobile.py / _regnet.py / _coatnet.py / _attn.py,
    # with their recorded figures.
    counted_elsewhere = ("efficientnet", "mobilenet", "regnet", "coatnet", "swin", "deit")
    for name in (n for n in models.MODELS if models.family(n) not in counted_elsewhere):
        c = models_main.count(name)
        assert models_main.FIGURES[name] == (c["params"], round(c["gmacs"], 4), c["image_size"],
                                             models_main.fingerprint(name)), name


def test_model_table_filters_by_name_and_traces_stale_figures(monkeypatch):
    assert models_main.select(["vit_s"]) == ["vit_s16", "vit_s32", "vit_s4", "vit_s8"]
    assert models_main.select(["NEXT_T", "resnet1"]) == ["resnet18", "resnet101", "resnet152",
                                                         "convnext_tiny"]
    assert models_main.select(["vit"], ["resnet18", "vit_ti4"]) == ["vit_ti4"]
    with pytest.raises(ValueError, match=r"no registered model name contains \['zzz'\]"):
        models_main.select(["zzz"])
    with pytest.raises(ValueError, match="config.model='vit_x' is unknown"):
        models_main.select([], ["vit_x"])
    assert models_main.figures("vit_ti4")["cached"]
    recorded = models_main.FIGURES["vit_ti4"]
    monkeypatch.setitem(models_main.FIGURES, "vit_ti4", (*recorded[:3], "stale"))
    traced = models_main.figures("vit_ti4")
    assert not traced["cached"]
    assert (traced["params"], round(traced["gmacs"], 4), traced["image_size"]) == recorded[:3]


@pytest.mark.slow
def test_every_registered_model_builds_abstractly():
    # One trace per model (init with output), with one op per convolution rather than the CPU
    # paths' one per kernel tap: half the time of tracing init and apply apart.
    with conv.library_convolutions():
        for name in models.MODELS:
            size = models.DEFAULT_IMAGE_SIZE[name]
            model = models.create(name, 10)
            out, _ = jax.eval_shape(lambda m=model, s=size: m.init_with_output(
                jax.random.key(0), jnp.zeros((2, s, s, 3))))
            assert out.shape == (2, 10), name


def _vit(**kwargs):
    return models.create("vit_ti4", 5, width=32, depth=2, num_heads=4, mlp_dim=64, **kwargs)


def _grads(model, variables, x, rng=0):
    def loss(p):
        return jnp.sum(model.apply({**variables, "params": p}, x, train=True,
                                   rngs={"dropout": jax.random.key(rng)}) ** 2)
    return jax.value_and_grad(loss)(variables["params"])


@pytest.mark.slow
def test_vit_remat_and_explicit_attention_compute_the_same():
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    variables = _vit().init(jax.random.key(1), x)
    variables["params"]["head"]["kernel"] = jax.random.normal(jax.random.key(2), (32, 5))
    ref_loss, ref_grads = _grads(_vit(), variables, x)
    # The spelled-out attention (taken when attention dropout is on) against the fused
    # primitive, and rematerialised blocks against stored activations.
    for kwargs in ({"remat": True}, {"attention_dropout_rate": 1e-9}):
        loss, grads = _grads(_vit(**kwargs), variables, x)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
        scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(ref_grads))
        # (atol on the global scale: the key bias's true gradient is 0, so only noise is there)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.slow
def test_drop_path_and_dropout_act_only_in_training():
    x = jax.random.normal(jax.random.key(0), (8, 16, 16, 3))
    for model in (_vit(drop_path_rate=0.5, dropout_rate=0.3, head_dropout_rate=0.5),
                  models.create("convnext_atto", 5, dims=(8, 8, 8, 8), drop_path_rate=0.5,
                                layer_scale_init=1.0),
                  models.create("resnet18", 5, width=4, drop_path_rate=0.5)):
        variables = jax.jit(model.init)(jax.random.key(1), x)
        variables["params"]["head"]["kernel"] = jnp.ones_like(
            variables["params"]["head"]["kernel"])
        train_fn = jax.jit(lambda v, r, m=model: m.apply(v, x, train=True, rngs={"dropout": r},
                                                         mutable=["batch_stats"])[0])
        train = [train_fn(variables, jax.random.key(i)) for i in (0, 1)]
        assert not np.allclose(train[0], train[1])  # a different rng drops different paths
        # In eval the rates change nothing: the same logits as the model without them.
        plain = model.clone(drop_path_rate=0.0, **{k: 0.0 for k in ("dropout_rate",
                            "head_dropout_rate") if hasattr(model, k)})
        np.testing.assert_array_equal(jax.jit(lambda v, m=model: m.apply(v, x))(variables),
                                      jax.jit(lambda v, m=plain: m.apply(v, x))(variables))


def test_drop_path_keeps_whole_examples_scaled_by_one_over_keep():
    x = jnp.ones((4000, 3, 2))
    out = np.asarray(layers.DropPath(rate=0.25).apply({}, x, train=True,
                                                      rngs={"dropout": jax.random.key(0)}))
    per_example = out.reshape(4000, -1)
    kept = per_example[:, 0] > 0
    # An example is dropped or kept whole; kept ones are x / 0.75.
    np.testing.assert_allclose(per_example, np.where(kept, 1 / 0.75, 0.0)[:, None]
                               * np.ones((1, 6)), rtol=1e-6)
    assert abs(kept.mean() - 0.75) < 0.03  # binomial std at n=4000 is 0.007


def test_vit_position_embedding_resizes_to_a_new_grid():
    grid = np.arange(16, dtype=np.float32).reshape(1, 16, 1) * np.ones((1, 1, 3), np.float32)
    posemb = np.concatenate([np.full((1, 1, 3), 7.0, np.float32), grid], axis=1)
    resized = vit.resize_pos_embedding(posemb, 1 + 64, num_prefix=1)
    assert resized.shape == (1, 65, 3)
    assert resized[0, 0, 0] == 7.0  # the class token's embedding is kept as is
    img = resized[0, 1:, 0].reshape(8, 8)
    # The grid is 4 * row + col; bilinear resizing keeps it linear and separable, so a row
    # step is 4 column steps (a transposed grid would give 1/4) and every row has one profile.
    cols, rows = img[0] - img[0, 0], img[:, 0] - img[0, 0]
    assert cols[-1] > 0
    np.testing.assert_allclose(rows, 4 * cols, rtol=1e-5)
    np.testing.assert_allclose(img - img[:, :1], np.broadcast_to(cols, (8, 8)), atol=1e-5)
    np.testing.assert_allclose(vit.resize_pos_embedding(posemb, 17, 1), posemb)


def test_unknown_models_and_fields_name_themselves():
    with pytest.raises(ValueError, match="resnet51"):
        models.create("resnet51", 10)
    with pytest.raises(ValueError, match="model_kwargs"):
        models.create("resnet18", 10, widht=3)


@pytest.mark.slow
def test_output_shapes_and_stems():
    x = jnp.zeros((2, 32, 32, 3))
    for stem, spatial in (("imagenet", 1), ("cifar", 4)):
        model = models.create("resnet18", 7, width=8, stem=stem)
        variables = model.init(jax.random.key(0), x)
        assert model.apply(variables, x).shape == (2, 7)
        feats = model.apply(variables, x, capture_intermediates=True,
                            mutable=["intermediates"])[1]["intermediates"]
        assert feats["stage4_block2"]["__call__"][0].shape[1] == spatial


@pytest.mark.parametrize("kernel,stride,padding,cin,cout", [
    (3, 1, ((1, 1), (1, 1)), 8, 16), (3, 2, ((1, 1), (1, 1)), 8, 16),
    (7, 2, ((3, 3), (3, 3)), 3, 8), (1, 2, ((0, 0), (0, 0)), 8, 16),
    (3, 2, "SAME", 5, 4), (3, 1, "VALID", 5, 4)])
def test_cpu_conv_gradients_equal_xla(kernel, stride, padding, cin, cout):
    x = jax.random.normal(jax.random.key(0), (4, 15, 15, cin))
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, cin, cout))
    dn = ("NHWC", "HWIO", "NHWC")

    def loss(conv):
        return lambda x, w: jnp.sum(conv(x, w, (stride, stride), padding,
                                         dimension_numbers=dn) ** 2)

    ours = jax.grad(loss(conv_general_dilated), (0, 1))(x, w)
    ref = jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, w)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("kernel,stride,padding", [
    pytest.param(7, 1, ((3, 3), (3, 3)), marks=pytest.mark.slow), (3, 1, "SAME"),
    (3, 1, "VALID"), (3, 2, "SAME"), pytest.param(5, 2, ((2, 2), (2, 2)), marks=pytest.mark.slow)])
def test_cpu_depthwise_conv_and_gradients_equal_xla(kernel, stride, padding):
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 6))
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, 1, 6))
    dn = ("NHWC", "HWIO", "NHWC")

    def loss(conv):
        return lambda x, w: jnp.sum(conv(x, w, (stride, stride), padding, dimension_numbers=dn,
                                         feature_group_count=6) ** 2)

    np.testing.assert_allclose(
        conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=dn,
                             feature_group_count=6),
        lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=dn,
                                 feature_group_count=6), rtol=1e-5, atol=1e-5)
    ours = jax.grad(loss(conv_general_dilated), (0, 1))(x, w)
    ref = jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, w)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs", [
    ("vit_ti4", {"width": 32, "depth": 2, "num_heads": 4, "mlp_dim": 64}),
    ("convnext_atto", {"dims": (8, 8, 8, 8), "depths": (1, 1, 1, 1), "stem_patch": 2}),
    ("resnet18", {"width": 8, "stage_sizes": (1, 1)})])
def test_bfloat16_compute_keeps_float32_params_and_close_logits(name, kwargs):
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    f32 = models.create(name, 5, **kwargs)
    bf16 = models.create(name, 5, dtype=jnp.bfloat16, **kwargs)
    variables = jax.jit(f32.init)(jax.random.key(1), x)
    variables["params"]["head"]["kernel"] = jax.random.normal(
        jax.random.key(2), variables["params"]["head"]["kernel"].shape) * 0.1
    assert jax.tree.leaves(jax.eval_shape(bf16.init, jax.random.key(1), x)["params"])[0].dtype \
        == jnp.float32  # params are created in float32 whatever the compute dtype
    ref, out = jax.jit(f32.apply)(variables, x), jax.jit(bf16.apply)(variables, x)
    assert out.dtype == jnp.float32  # logits come back in float32 for the loss
    # bf16 keeps 8 bits of mantissa: a few tiny layers stay within ~2% of the logit scale.
    np.testing.assert_allclose(out, ref, atol=0.03 * float(jnp.abs(ref).max()))
    grads = jax.jit(jax.grad(lambda p: jnp.sum(bf16.apply({**variables, "params": p}, x) ** 2)))(
        variables["params"])
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("stride,padding", [(1, ((1, 1), (1, 1))), (2, "SAME")])
def test_cpu_grouped_conv_gradients_equal_xla(stride, padding):
    """Groups of 4 input channels (RegNet's grouped 3x3): XLA's forward and input gradient,
    the kernel gradient per tap and group."""
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 12))
    w = jax.random.normal(jax.random.key(1), (3, 3, 4, 6))
    dn = ("NHWC", "HWIO", "NHWC")

    def loss(conv):
        return lambda x, w: jnp.sum(conv(x, w, (stride, stride), padding, dimension_numbers=dn,
                                         feature_group_count=3) ** 2)

    ours = jax.grad(loss(conv_general_dilated), (0, 1))(x, w)
    ref = jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, w)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_flat_offset_kernel_grad_candidate_equals_conv_py():
    # The benchmark's rejected candidate must compute the same gradient, or its timing means
    # nothing.
    from jaxcls.bench import conv_layers
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 3))
    g = jax.random.normal(jax.random.key(1), (2, 7, 7, 5))
    ours = conv_layers.flat_offset_kernel_grad(x, g, (3, 3, 3, 5))
    ref = jax.grad(lambda w: jnp.sum(lax.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")) * g))(
            jnp.zeros((3, 3, 3, 5)))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
