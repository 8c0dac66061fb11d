"""ResNet family: published parameter counts, and the CPU conv gradient against XLA's own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcls import models
from jaxcls.models.conv import conv_general_dilated


@pytest.mark.parametrize("name,count", [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
    ("resnet101", 44_549_160), ("resnet152", 60_192_808)])
def test_parameter_counts_match_torchvision(name, count):
    model = models.create(name, 1000)
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False))
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) == count


def test_unknown_and_coming_models_name_themselves():
    with pytest.raises(ValueError, match="resnet51"):
        models.create("resnet51", 10)
    with pytest.raises(ValueError, match="not available yet"):
        models.create("vit_b16", 10)
    with pytest.raises(ValueError, match="model_kwargs"):
        models.create("resnet18", 10, widht=3)


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
