"""RegNetY: logits equal to timm's and Hugging Face transformers' models (random init,
non-trivial BatchNorm statistics) through `jaxcls.weights.load`; widths, groups and figures
equal timm's for every variant."""

import pytest

from jaxcls import models, weights
from jaxcls.models import __main__ as listing
from jaxcls.models import regnet
from tests.conftest import torch_references
from tests.test_zoo_mobile import _assert_same_logits, _randomised, _torch_counts

NAMES = list(regnet.MODELS)


@pytest.fixture(scope="module")
def refs():
    return torch_references()


def test_logits_equal_timm_regnety_016_at_32(refs, tmp_path):
    torch, _, timm = refs
    torch.manual_seed(0)
    ref = _randomised(timm.create_model("regnety_016", num_classes=7), torch)
    _assert_same_logits(torch, ref, "regnety_016", 32, tmp_path, "timm")
    pre = weights.read(str(tmp_path / "weights.pth"), "regnety_016").preprocessing
    want = ref.pretrained_cfg
    assert (pre["crop_frac"], pre["interpolation"], pre["mean"]) == (
        want["crop_pct"], want["interpolation"], want["mean"])


def _hf_regnet(torch, **config):
    """transformers' RegNetForImageClassification (random init, randomised BatchNorm), called
    on pixels to give its logits as timm's models do."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = _randomised(transformers.RegNetForImageClassification(
        transformers.RegNetConfig(**config)), torch)

    class Logits:
        def __call__(self, x):
            return model(pixel_values=x).logits

        def state_dict(self):
            return model.state_dict()

    return Logits()


def test_logits_equal_transformers_small_regnet(refs, tmp_path):
    """A two-stage RegNetY in Hugging Face's layout (stem 8, widths 16 / 48 in groups of 8),
    loaded as regnety_016 with those fields."""
    torch = refs[0]
    ref = _hf_regnet(torch, embedding_size=8, hidden_sizes=(16, 48), depths=(1, 2),
                     groups_width=8, num_labels=5)
    _assert_same_logits(torch, ref, "regnety_016", 32, tmp_path, "hf", stem_channels=8,
                        stages=(regnet.Stage(1, 16, 8), regnet.Stage(2, 48, 8)))


def test_stage_widths_and_groups_equal_timm(refs):
    """Stage depths, widths and groups from the (w0, wa, wm, depth) rule, as timm builds them."""
    torch, _, timm = refs
    for name in NAMES:
        with torch.device("meta"):
            ref = timm.create_model(name)
        want = [(len(list(s.children())), s.b1.conv3.conv.out_channels,
                 s.b1.conv2.conv.out_channels // s.b1.conv2.conv.groups)
                for s in (ref.s1, ref.s2, ref.s3, ref.s4)]
        assert [tuple(s) for s in models.create(name, 10).stages] == want, name


@pytest.mark.slow
def test_params_and_macs_equal_timm_for_every_variant(refs):
    """`python -m jaxcls.models`'s figures (1000 classes, 224) are timm's conv + linear MACs."""
    torch, _, timm = refs
    for name in NAMES:
        with torch.device("meta"):
            ref = timm.create_model(name).eval()
        ours = listing.count(name)
        assert (ours["params"], round(ours["gmacs"] * 1e9)) == _torch_counts(torch, ref, 224)
        assert listing.FIGURES[name] == (ours["params"], round(ours["gmacs"], 4), 224,
                                         listing.fingerprint(name)), name


@pytest.mark.slow
def test_full_size_logits_equal_timm_regnety_032(refs, tmp_path):
    torch, _, timm = refs
    torch.manual_seed(0)
    ref = _randomised(timm.create_model("regnety_032"), torch)
    _assert_same_logits(torch, ref, "regnety_032", 224, tmp_path, "timm")


@pytest.mark.slow
def test_full_size_logits_equal_transformers_regnet_y_040(refs, tmp_path):
    """transformers' default RegNetConfig is facebook/regnet-y-040's: jaxcls' regnety_040."""
    torch = refs[0]
    ref = _hf_regnet(torch)
    _assert_same_logits(torch, ref, "regnety_040", 224, tmp_path, "hf")


def assert_default_gradcam_layer_is_the_cam(model, size: int, layer: str):
    """Grad-CAM's default layer of `model` is `layer`, and it is the map that global average
    pooling and the head read: there d logit_c / dA = W_c / hw at every position, so Grad-CAM
    equals the class activation map relu(A W_c) / hw."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcls import explain

    x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
    variables = jax.jit(model.init, compiler_options={"xla_backend_optimization_level": 0})(
        jax.random.key(0), x)
    assert explain.default_layer(explain.spatial_layers(model, variables, x.shape[1:])) == layer
    classes = jnp.array([0, 2])
    activation, grads = jax.jit(lambda v, x, c: explain.layer_gradients(model, v, x, layer, c),
                                compiler_options={"xla_backend_optimization_level": 0})(
        variables, x, classes)
    kernel = np.asarray(variables["params"]["head"]["kernel"])
    hw = activation.shape[1] * activation.shape[2]
    expected = kernel.T[np.asarray(classes)] / hw
    np.testing.assert_allclose(grads, np.broadcast_to(expected[:, None, None], grads.shape),
                               rtol=1e-5, atol=1e-8)
    cam = np.maximum(np.einsum("nhwk,nk->nhw", activation, expected), 0)
    np.testing.assert_allclose(explain.grad_cam(activation, grads), cam, rtol=1e-5, atol=1e-6)


def test_gradcam_default_layer_is_the_last_block():
    model = models.create("regnety_016", 3, stem_channels=8,
                          stages=(regnet.Stage(1, 8, 8), regnet.Stage(2, 16, 8)))
    assert_default_gradcam_layer_is_the_cam(model, 16, "stage2_block2")
