"""Every config in configs/ builds; ImageNet configs fail fast with instructions without data."""

import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest

from jaxcls import defaults, models, train
from tests.conftest import ROOT

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_all_configs_found():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"default.py", "cifar10_resnet18.py", "cifar10_small.py", "imagenet_resnet50.py",
            "vit_b16.py"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds(path):
    module = _load(path)
    assert "Measured" in module.__doc__ and "python -m jaxcls.main" in module.__doc__
    config = module.get_config()
    assert set(config.keys()) == set(defaults.get_config().keys())
    if config.model in models.COMING:
        with pytest.raises(ValueError, match="not available yet"):
            train.validate(config)
        return
    train.validate(config)
    model = models.create(config.model, 10, dtype=jnp.dtype(config.dtype),
                          **config.model_kwargs)
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, config.image_size, config.image_size, 3))))
    assert jax.eval_shape(lambda v: model.apply(v, jnp.zeros(
        (2, config.image_size, config.image_size, 3))), shapes).shape == (2, 10)


def test_imagenet_config_without_data_says_how_to_prepare(tmp_path):
    config = _load(os.path.join(ROOT, "configs", "imagenet_resnet50.py")).get_config()
    config.data_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="tfds build imagenet2012"):
        train.run(config, str(tmp_path / "run"))


def test_every_default_key_is_commented():
    source = open(os.path.join(ROOT, "jaxcls", "defaults.py")).read()
    for key in defaults.get_config().keys():
        line = next(ln for ln in source.splitlines() if ln.strip().startswith(f"c.{key} ="))
        assert "#" in line, f"config key {key} has no comment"
