"""Every config in configs/ builds; ImageNet configs fail fast with instructions without data."""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
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
            "vit_b16.py", "finetune_resnet50.py", "finetune_vit_b16.py"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds(path, tmp_path):
    module = _load(path)
    assert "Measured" in module.__doc__ and "python -m jaxcls.main" in module.__doc__
    config = module.get_config()
    assert set(config.keys()) == set(defaults.get_config().keys())
    for key in ("dataset", "init_from"):  # fine-tuning recipes leave these to the user
        if config[key] is None:
            with pytest.raises(ValueError, match=f"--config.{key}="):
                train.validate(config)
            config[key] = str(tmp_path)
    if config.distill.teacher is None:  # distillation recipes leave the teacher to the user
        with pytest.raises(ValueError, match="--config.distill.teacher="):
            train.validate(config)
        config.distill.teacher = ""
    train.validate(config)
    model = train.create_model(config, 10)
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, config.image_size, config.image_size, 3))))
    assert jax.eval_shape(lambda v: model.apply(v, jnp.zeros(
        (2, config.image_size, config.image_size, 3))), shapes).shape == (2, 10)


@pytest.mark.slow
def test_vit_b16_config_trains_a_few_steps_on_synthetic_data(tmp_path):
    """The ViT-B/16 recipe's command (its docstring's) end to end: the recipe's optimizer, EMA,
    schedule and head override, on one block at 32 px (the plumbing; the full-size model is
    checked abstractly by test_every_registered_model_builds_abstractly)."""
    workdir = str(tmp_path / "vit")
    one_block = tmp_path / "vit_b16_depth1.py"  # model_kwargs gets no new keys from flags
    one_block.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('vit', {ROOT!r} + '/configs/vit_b16.py')\n"
        "vit = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(vit)\n"
        "def get_config():\n"
        "    c = vit.get_config()\n"
        "    c.model_kwargs.depth = 1\n"
        "    c.image_size, c.augment = 32, c.augment.replace('(224)', '(32)')\n"
        "    return c\n")
    out = subprocess.run(
        [sys.executable, "-m", "jaxcls.main", f"--config={one_block}",
         f"--workdir={workdir}", "--config.dataset=synthetic", "--config.batch_size=4",
         "--config.num_steps=3", "--config.dtype=float32", "--config.num_workers=0",
         "--config.synthetic_examples=64", "--config.num_classes=10",
         "--config.log_every_steps=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    counts = {}
    for classes in (10, 1000):
        model = models.create("vit_b16", classes, depth=1)
        shapes = jax.eval_shape(lambda x, m=model: m.init(jax.random.key(0), x, train=False),
                                x)
        counts[classes] = sum(v.size for v in jax.tree.leaves(shapes["params"]))
    assert f"{counts[10]:,} parameters" in out.stderr  # the 10-class head, not 1000
    assert f"{counts[1000]:,}" not in out.stderr
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert {"eval", "eval_ema"} <= {r["split"] for r in rows}  # the recipe keeps an EMA


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


def _groups(recipe: str, num_classes: int = 5, steps_per_epoch: int = 100) -> dict:
    """{parameter path: optim.Group} of a fine-tune recipe's own config and full-size model
    (abstract shapes: nothing is computed)."""
    import jax
    import jax.numpy as jnp

    from jaxcls import optim, sharding, train

    config = defaults.load_config(os.path.join(ROOT, "configs", recipe))
    model = train.create_model(config, num_classes)
    size = config.image_size
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(
        (1, size, size, 3)), train=False))["params"]
    groups = optim.param_groups(config, params, steps_per_epoch)
    flat = jax.tree_util.tree_flatten_with_path(groups, is_leaf=lambda g: g is None or isinstance(
        g, optim.Group))[0]
    return {sharding.path_str(path): g for path, g in flat}


def test_finetune_recipes_own_parameter_groups():
    r50 = _groups("finetune_resnet50.py")
    assert (r50["head/kernel"].lr, r50["head/kernel"].start) == (10.0, 0)
    stage_lr = {"stem": 0.25, "stage1": 0.25, "stage2": 0.25, "stage3": 0.5, "stage4": 1.0}
    for path, g in r50.items():
        if path.startswith("head/"):
            continue
        assert (g.lr, g.start) == (stage_lr[path.split("_")[0]], 100), path  # after epoch 1
        assert g.decay == (1e-4 if path.endswith("kernel") else 0.0), path  # kernels only

    vit = _groups("finetune_vit_b16.py")
    depth = 12
    assert vit["head/kernel"].lr == pytest.approx(1.0)  # layer L + 1: no decay
    for i in range(depth):
        assert vit[f"block{i}/mlp/fc1/kernel"].lr == pytest.approx(0.75 ** (depth - i)), i
    assert vit["pos_embedding"].lr == pytest.approx(0.75 ** (depth + 1))
    assert vit["pos_embedding"].decay == 0.0 and vit["cls"].decay == 0.0
    assert vit["block0/mlp/fc1/kernel"].decay == 0.05

    for recipe in ("finetune_efficientnet_b0.py", "finetune_mobilenetv3_large.py"):
        groups = _groups(recipe)
        assert (groups["head/kernel"].lr, groups["head/kernel"].start) == (10.0, 0), recipe
        body = [g for p, g in groups.items() if not p.startswith("head/")]
        assert body and all((g.lr, g.start) == (1.0, 100) for g in body), recipe
