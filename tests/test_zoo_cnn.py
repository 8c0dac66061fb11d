"""The classic CNN families (LeNet-5, AlexNet, VGG, GoogLeNet, Inception-v3, DenseNet): logits
equal torchvision 0.28's and timm 1.0.31's models (random init, non-trivial BatchNorm
statistics, eval mode) once their state dicts go through `jaxcls.weights.load`; published
parameter counts and GMACs; Grad-CAM's default layer. Small inputs (and, for AlexNet/VGG,
narrow fc layers) here; full-size parity and the big variants' counts are marked slow."""

import functools
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch as safetensors_torch
from conftest import ROOT, torch_references

from jaxcls import explain, models, weights
from jaxcls.models import __main__ as models_main

torch, torchvision, timm = torch_references()
tv = torchvision.models


def _randomise(model):
    """Non-trivial BatchNorm scales, biases and running statistics, so that all of them (and
    the epsilon) matter; eval mode."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=g)
                module.bias.normal_(0, 0.1, generator=g)
                module.running_mean.normal_(0, 0.1, generator=g)
                module.running_var.uniform_(0.5, 2.0, generator=g)
    return model.eval()


def _narrow_classifier(model, widths, num_classes=10):
    """AlexNet/VGG with their Linear layers narrowed (same positions, same flatten), so the
    default suite does not spend seconds on 100M-parameter fc layers."""
    linears = [i for i, m in enumerate(model.classifier) if isinstance(m, torch.nn.Linear)]
    dims = [model.classifier[linears[0]].in_features, *widths, num_classes]
    for i, fan_in, fan_out in zip(linears, dims[:-1], dims[1:], strict=True):
        model.classifier[i] = torch.nn.Linear(fan_in, fan_out)
    return model


def _save(state: dict, path: str) -> str:
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


@functools.cache
def _forward(model):
    """One compiled forward per distinct model (equal modules hash equal)."""
    return jax.jit(model.apply)


def _assert_parity(reference, name, size, path, layout, **model_kwargs):
    """reference(images) against jaxcls's `name` loaded from the state dict at `path`."""
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference(images).numpy()
    assert weights.read(path, name).layout == layout
    model, variables = weights.load(path, name, image_size=size, **model_kwargs)
    logits = np.asarray(_forward(model)(variables, jnp.asarray(
        images.numpy().transpose(0, 2, 3, 1))))
    np.testing.assert_allclose(logits, expected, rtol=1e-4,
                               atol=1e-4 * float(np.abs(expected).max()))


def _check(reference, name, size, tmp_path, layout, rename=None, **model_kwargs):
    state = reference.state_dict()
    if rename:
        state = {rename(k): v for k, v in state.items()}
    path = _save(state, str(tmp_path / f"{name}.safetensors"))
    _assert_parity(reference, name, size, path, layout, **model_kwargs)


def _legacy_densenet_key(key: str) -> str:
    """torchvision's pretrained DenseNet files spell `denselayer1.norm1` `denselayer1.norm.1`."""
    return re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key)


# ---- parity at small sizes (default suite) -------------------------------------------------------

def test_alexnet_matches_torchvision(tmp_path):
    torch.manual_seed(0)
    ref = _randomise(_narrow_classifier(tv.alexnet(), (64, 64)))
    _check(ref, "alexnet", 67, tmp_path, "torchvision", mlp_dim=64)


def test_vgg_bn_matches_torchvision_linear_head(tmp_path):
    """A 2x2 map through torch's overlapping adaptive bins to 7x7, flattened channel-major."""
    torch.manual_seed(0)
    ref = _randomise(_narrow_classifier(tv.vgg11_bn(), (64, 32)))
    _check(ref, "vgg11_bn", 64, tmp_path, "torchvision", mlp_dims=(64, 32))


def test_vgg_matches_timm_conv_head(tmp_path):
    """timm's pre_logits: a 7x7 conv over the 2x2 map average-pooled up to 7x7."""
    torch.manual_seed(0)
    ref = _randomise(timm.create_model("vgg11", num_classes=10, mlp_ratio=64 / 4096))
    _check(ref, "vgg11", 64, tmp_path, "timm", mlp_dims=(64, 4096))
    assert weights.read(str(tmp_path / "vgg11.safetensors"), "vgg11").model_kwargs == {
        "conv_head": True}


def test_googlenet_matches_torchvision_ignoring_aux_heads(tmp_path):
    """Ceil-mode pools at an odd size, transform_input, and the checkpoint's aux1/aux2."""
    torch.manual_seed(0)
    ref = _randomise(tv.googlenet(num_classes=10, transform_input=True, init_weights=True))
    assert any(k.startswith("aux1.") for k in ref.state_dict())
    _check(ref, "googlenet", 67, tmp_path, "torchvision", transform_input=True)
    assert weights.read(str(tmp_path / "googlenet.safetensors"), "googlenet"
                        ).preprocessing["mean"] == (0.5, 0.5, 0.5)


@pytest.mark.slow  # (CI budget) GoogLeNet keeps the family in the default suite
def test_inception_v3_matches_timm(tmp_path):
    """(torchvision names every tensor alike and adds AuxLogits: tested at 299, slow.)"""
    torch.manual_seed(0)
    ref = _randomise(timm.create_model("inception_v3", num_classes=10))
    _check(ref, "inception_v3", 75, tmp_path, "timm")


SMALL_DENSENET = dict(growth_rate=8, block_config=(2, 2, 2, 2), bn_size=2, num_classes=10)
SMALL_DENSENET_KWARGS = dict(growth_rate=8, block_sizes=(2, 2, 2, 2), init_features=16,
                             bn_size=2)


def test_densenet_matches_torchvision_legacy_keys_and_timm(tmp_path):
    """A narrow DenseNet: torchvision's names in its pretrained files' `norm.1` spelling, and
    timm's model (its norm5 a BatchNormAct, the ReLU inside)."""
    assert _legacy_densenet_key("features.denseblock1.denselayer3.norm2.weight") == \
        "features.denseblock1.denselayer3.norm.2.weight"
    torch.manual_seed(0)
    ref = _randomise(tv.DenseNet(num_init_features=16, **SMALL_DENSENET))
    _check(ref, "densenet121", 64, tmp_path, "timm", rename=_legacy_densenet_key,
           **SMALL_DENSENET_KWARGS)
    ref = _randomise(timm.models.DenseNet(**SMALL_DENSENET))  # stem: 2 x growth_rate
    _check(ref, "densenet121", 64, tmp_path, "timm", **SMALL_DENSENET_KWARGS)


def test_lenet5_has_the_1998_layout():
    """Conv 6@5x5 (over RGB) + conv 16@5x5 + 400->120 + 120->84 + 84->10 = 62,006 parameters
    (61,706 on grayscale); the feature maps of the two convs, C1 28x28 and C3 10x10."""
    c = models_main.count("lenet5", num_classes=10)
    assert c["params"] == 6 * 76 + 16 * 151 + 120 * 401 + 84 * 121 + 10 * 85 == 62_006
    model = models.create("lenet5", 10)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    assert explain.spatial_layers(model, variables, (32, 32, 3)) == ["c1", "c3"]
    shapes = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 32, 32, 3)),
                                                  capture_intermediates=True)[1], variables)
    assert shapes["intermediates"]["c1"]["__call__"][0].shape == (1, 28, 28, 6)
    assert shapes["intermediates"]["c3"]["__call__"][0].shape == (1, 10, 10, 16)
    with pytest.raises(ValueError, match="LeNet-5 takes 32x32 images, got 28x28"):
        model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 3)))


@pytest.mark.parametrize("name,size,layer,kwargs", [
    ("lenet5", 32, "c3", {}), ("alexnet", 224, "conv5", {}),
    ("vgg11_bn", 224, "features_26", {}), ("vgg11", 224, "features_18", {"conv_head": True}),
    ("googlenet", 224, "inception5b", {}), ("densenet121", 64, "norm5", SMALL_DENSENET_KWARGS),
    pytest.param("inception_v3", 299, "Mixed_7c", {}, marks=pytest.mark.slow)])
def test_grad_cam_default_layer_is_the_last_feature_map(name, size, layer, kwargs):
    """The last top-level module with a spatial output: the last conv/BN, inception module."""
    model = models.create(name, 10, **kwargs)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                  jnp.zeros((1, size, size, 3))))
    assert explain.default_layer(explain.spatial_layers(model, variables, (size, size, 3))) \
        == layer


def test_grad_cam_gradients_at_densenet_norm5():
    """After norm5 come ReLU, the mean over the h x w map and the head, so d score / d norm5 is
    head_kernel[:, class] / (h w) where norm5's output is positive and 0 elsewhere."""
    model = models.create("densenet121", 3, **SMALL_DENSENET_KWARGS)
    x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    rng = np.random.default_rng(0)  # random variables without compiling an init
    variables = jax.tree.map(lambda v: jnp.asarray(rng.uniform(0.5, 1.5, v.shape), v.dtype),
                             jax.eval_shape(model.init, jax.random.key(0), x))
    classes = jnp.array([0, 2])
    activation, grads = jax.jit(functools.partial(explain.layer_gradients, model, layer="norm5"))(
        variables, x, classes=classes)
    assert activation.shape[1:3] == (2, 2)
    expected = (activation > 0) * variables["params"]["head"]["kernel"].T[classes][
        :, None, None, :] / 4
    np.testing.assert_allclose(grads, expected, rtol=1e-5, atol=1e-6 * float(
        np.abs(expected).max()))


# ---- full size and published counts (slow) -------------------------------------------------------

PUBLISHED = [  # name, parameters with 1000 classes, GMACs at the default resolution
    ("alexnet", 61_100_840, 0.71),
    ("vgg11", 132_863_336, 7.61), ("vgg11_bn", 132_868_840, 7.61),
    ("vgg13", 133_047_848, 11.31), ("vgg13_bn", 133_053_736, 11.31),
    ("vgg16", 138_357_544, 15.47), ("vgg16_bn", 138_365_992, 15.47),
    ("vgg19", 143_667_240, 19.63), ("vgg19_bn", 143_678_248, 19.63),
    ("googlenet", 6_624_904, 1.50),
    ("inception_v3", 23_834_568, 5.71),  # timm's count; torchvision's 27,161,264 has AuxLogits
    ("densenet121", 7_978_856, 2.83), ("densenet161", 28_681_000, 7.73),
    ("densenet169", 14_149_480, 3.36), ("densenet201", 20_013_928, 4.29),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,params,gmacs", PUBLISHED)
def test_published_parameters_and_gmacs(name, params, gmacs):
    """torchvision's documented figures (timm's for Inception-v3 without its aux head)."""
    c = models_main.count(name)
    assert c["params"] == params
    assert abs(c["gmacs"] - gmacs) < 0.006 * gmacs + 0.005, c


@pytest.mark.slow
def test_full_size_alexnet_and_vgg16_bn_match_torchvision(tmp_path):
    torch.manual_seed(0)
    _check(_randomise(tv.alexnet()), "alexnet", 224, tmp_path, "torchvision")
    _check(_randomise(tv.vgg16_bn()), "vgg16_bn", 224, tmp_path, "torchvision")


@pytest.mark.slow
def test_full_size_vgg16_bn_and_a_sliding_conv_head_match_timm(tmp_path):
    """At 224 timm's 7x7 conv sees the whole 7x7 map; at 256 it slides over 8x8 (2x2 outputs,
    then averaged), which torchvision's Linear head cannot do."""
    torch.manual_seed(0)
    _check(_randomise(timm.create_model("vgg16_bn")), "vgg16_bn", 224, tmp_path, "timm")
    ref = _randomise(timm.create_model("vgg11", num_classes=10, mlp_ratio=64 / 4096))
    _check(ref, "vgg11", 256, tmp_path, "timm", mlp_dims=(64, 4096))


@pytest.mark.slow
def test_full_size_googlenet_inception_v3_densenet121_match_torchvision(tmp_path):
    torch.manual_seed(0)
    _check(_randomise(tv.googlenet(init_weights=True)), "googlenet", 224, tmp_path,
           "torchvision")
    _check(_randomise(tv.inception_v3(init_weights=False)), "inception_v3", 299, tmp_path,
           "timm")
    _check(_randomise(tv.densenet121()), "densenet121", 224, tmp_path, "timm",
           rename=_legacy_densenet_key)


@pytest.mark.slow
def test_models_command_lists_the_classic_cnns():
    out = subprocess.run([sys.executable, "-m", "jaxcls.models",
                          "--names=lenet5,alexnet,googlenet"], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()[1:]}
    assert rows == {"lenet5": ["146,156", "0.00", "32"], "alexnet": ["61,100,840", "0.71", "224"],
                    "googlenet": ["6,624,904", "1.50", "224"]}
