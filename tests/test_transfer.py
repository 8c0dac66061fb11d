"""Transfer learning: parameter groups (multipliers, layer-wise decay, freezing, gradual
unfreezing), EMA, and fine-tuning an imported PyTorch checkpoint on an image folder."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers
from PIL import Image

from jaxcls import checkpoint, models, optim, steps, train, weights
from tests.conftest import tiny_config


def _params(name, size=32, **kwargs):
    model = models.create(name, 3, **kwargs)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))[
        "params"]


def test_layer_ids_put_blocks_in_order_for_every_family():
    ids, n = optim.layer_ids(list(_params("vit_ti4")))
    assert n == 12 and ids["patch_embed"] == ids["cls"] == ids["pos_embedding"] == 0
    assert [ids[f"block{i}"] for i in range(12)] == list(range(1, 13))
    assert ids["encoder_norm"] == ids["head"] == 13
    ids, n = optim.layer_ids(list(_params("resnet50", 64)))
    assert n == 16 and ids["stem_conv"] == ids["stem_bn"] == 0
    assert ids["stage1_block1"] == 1 and ids["stage2_block1"] == 4 and ids["stage4_block3"] == 16
    assert ids["head"] == 17
    ids, n = optim.layer_ids(list(_params("convnext_atto", 64)))
    assert n == 12 and ids["stage2_downsample_conv"] == ids["stage2_block1"] == 3
    assert ids["head_norm"] == ids["head"] == 13
    ids, n = optim.layer_ids(list(_params("swin_tiny_patch4_window7_224")))
    assert n == 12 and ids["patch_embed"] == ids["patch_norm"] == 0
    assert ids["stage2_downsample"] == ids["stage2_block1"] == 3 and ids["stage4_block2"] == 12
    assert ids["norm"] == ids["head"] == 13
    ids, n = optim.layer_ids(list(_params("deit_tiny_distilled_patch16_224")))
    assert n == 12 and ids["cls"] == ids["dist_token"] == ids["pos_embedding"] == 0
    assert ids["head"] == ids["head_dist"] == 13


def _updates(config, params, grads, n=1, steps_per_epoch=1):
    tx = optim.create_optimizer(config, optax.constant_schedule(config.learning_rate), params,
                                steps_per_epoch)
    state = tx.init(params)
    out = []
    for g in grads if isinstance(grads, list) else [grads] * n:
        u, state = tx.update(g, state, params)
        out.append(u)
    return out, state


def _vit_params():
    model = models.create("vit_ti4", 3, width=8, depth=2, num_heads=2, mlp_dim=16)
    return model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]


def test_lr_multipliers_and_layer_decay_scale_each_update():
    params = _vit_params()
    c = tiny_config(optimizer="sgd", momentum=0.0, learning_rate=1.0, weight_decay=0.0,
                    layer_decay=0.5, lr_multipliers=((r"head/.*", 10.0), (r"block0/.*", 3.0)))
    (u,), _ = _updates(c, params, jax.tree.map(jnp.ones_like, params))
    # L = 2 blocks: embeddings 0.5^3, block0 3 x 0.5^2, block1 0.5^1, head 10 x 0.5^0.
    expected = {"patch_embed": -0.125, "pos_embedding": -0.125, "cls": -0.125,
                "block0": -0.75, "block1": -0.5, "encoder_norm": -1.0, "head": -10.0}
    for name, value in expected.items():
        for leaf in jax.tree.leaves(u[name]):
            np.testing.assert_allclose(leaf, value, err_msg=name)


def test_frozen_parameters_get_no_optimizer_state_and_no_update():
    params = _vit_params()
    c = tiny_config(optimizer="adamw", learning_rate=0.1, weight_decay=0.5,
                    freeze=(r"(?!head/).*",))
    (u,), state = _updates(c, params, jax.tree.map(jnp.ones_like, params))
    head = sum(x.size for x in jax.tree.leaves(params["head"]))
    moments = sum(x.size for x in jax.tree.leaves(state) if x.ndim > 0)
    assert moments == 2 * head  # Adam's mu and nu for the head only
    assert all(not np.any(x) for k, v in u.items() if k != "head" for x in jax.tree.leaves(v))
    assert all(np.all(x != 0) for x in jax.tree.leaves(u["head"]))
    mask = optim.frozen_mask(c, params)
    assert mask["head"]["kernel"] is False and mask["block0"]["mlp"]["fc1"]["kernel"] is True


def test_freezing_and_unfreezing_are_described_by_group():
    params = _params("vit_ti4", 8, width=8, depth=2, num_heads=2, mlp_dim=16)
    sizes = {k: sum(x.size for x in jax.tree.leaves(v)) for k, v in params.items()}
    total, head = sum(sizes.values()), sizes["head"]
    assert optim.describe_freezing(tiny_config(), params, 10) == []
    probe = optim.describe_freezing(tiny_config(freeze=(r"(?!head/).*",)), params, 10)
    arrays = len(jax.tree.leaves(params))
    assert probe == [
        f"frozen for the whole run (config.freeze / zero lr multiplier): {arrays - 2} parameter "
        f"arrays ({total - head:,} of {total:,} parameters) in block0, block1, cls, "
        f"encoder_norm, patch_embed, pos_embedding",
        f"trained from the start: 2 parameter arrays ({head:,} of {total:,} parameters) in head"]
    staged = optim.describe_freezing(
        tiny_config(unfreeze_epochs=((r"block1/.*", 2), (r"(?!head/).*", 3))), params, 10)
    assert staged[0].startswith("trained from the start: 2 parameter arrays")
    assert staged[1].startswith(f"frozen until step 20 (epoch 2, config.unfreeze_epochs), then "
                                f"trained: {len(jax.tree.leaves(params['block1']))} parameter "
                                f"arrays ({sizes['block1']:,} of")
    assert staged[2].startswith("frozen until step 30 (epoch 3, config.unfreeze_epochs)")


def test_weight_decay_multiplier_zero_turns_decay_off():
    params = jax.tree.map(lambda x: x + 1.0, _vit_params())
    c = tiny_config(optimizer="adamw", learning_rate=1.0, weight_decay=0.1,
                    wd_multipliers=((r"block0/.*", 0.0), (r"head/.*", 2.0)))
    (u,), _ = _updates(c, params, jax.tree.map(jnp.zeros_like, params))  # decay alone
    assert not np.any(u["block0"]["mlp"]["fc1"]["kernel"])
    k = params["block1"]["mlp"]["fc1"]["kernel"]
    np.testing.assert_allclose(u["block1"]["mlp"]["fc1"]["kernel"], -0.1 * k, rtol=1e-6)
    np.testing.assert_allclose(u["head"]["kernel"], -0.2 * params["head"]["kernel"], rtol=1e-6)
    assert not np.any(u["head"]["bias"])  # biases never decay


def test_gradual_unfreezing_starts_a_fresh_adam_at_its_epoch():
    params = _vit_params()
    c = tiny_config(optimizer="adamw", learning_rate=1.0, weight_decay=0.0,
                    unfreeze_epochs=((r"(?!head/).*", 2),))
    grads = [jax.tree.map(lambda x, i=i: jax.random.normal(jax.random.key(i), x.shape), params)
             for i in range(3)]
    updates, _ = _updates(c, params, grads, steps_per_epoch=1)
    for u in updates[:2]:  # epochs 0 and 1: the head alone moves
        assert not np.any(u["block0"]["attn"]["query"]["kernel"])
        assert np.all(u["head"]["kernel"] != 0)
    # At epoch 2 the backbone takes the first step of an Adam that saw no earlier gradients.
    adam = optax.adam(1.0)
    first, _ = adam.update(grads[2], adam.init(params), params)
    np.testing.assert_allclose(updates[2]["block1"]["mlp"]["fc2"]["kernel"],
                               first["block1"]["mlp"]["fc2"]["kernel"], rtol=1e-5)


class _Dense(nn.Module):
    num_classes: int = 5

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1).astype(jnp.float32))


def test_ema_of_params_follows_its_formula():
    c = tiny_config(image_size=4, augment="", optimizer="sgd", learning_rate=0.5,
                    ema_decay=0.75)
    model = _Dense()
    p0 = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))["params"]
    tx = optim.create_optimizer(c, optax.constant_schedule(0.5), p0, 10)
    state = steps.init_state(model, tx, jax.random.key(0), 4, ema=True)
    step = jax.jit(steps.make_train_step(model, tx, c))
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (8, 4, 4, 3), np.uint8)),
             "label": jnp.asarray(rng.integers(0, 5, 8).astype(np.int32)),
             "mask": jnp.ones((8,), jnp.float32)}
    ema = state.params
    for _ in range(3):
        state, _ = step(state, batch, jax.random.key(1))
        ema = jax.tree.map(lambda e, p: 0.75 * e + 0.25 * p, ema, state.params)
    for a, b in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(ema), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.allclose(state.ema_params["Dense_0"]["kernel"], state.params["Dense_0"]["kernel"])


# ---- fine-tuning end to end -------------------------------------------------------------------

def _image_folder(root, classes=3, train_per_class=12, test_per_class=4, size=16):
    """Class c: noise around a class colour, so the classes can be learned."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(classes):
            os.makedirs(os.path.join(root, split, f"class{c}"))
            colour = np.array([255 * (c == 0), 255 * (c == 1), 255 * (c == 2)])
            for i in range(n):
                pixels = np.clip(colour + rng.normal(0, 40, (size, size, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(
                    os.path.join(root, split, f"class{c}", f"{i}.png"))
    return root


@pytest.fixture(scope="module")
def torch_resnet(tmp_path_factory):
    """A small ResNet (basic blocks, 8-16 channels, ImageNet stem) from transformers, randomly
    initialised, 5 classes, saved as a Hugging Face folder."""
    torch.manual_seed(0)
    model = transformers.ResNetForImageClassification(transformers.ResNetConfig(
        num_labels=5, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
        layer_type="basic"))
    folder = str(tmp_path_factory.mktemp("hf_resnet"))
    model.save_pretrained(folder)
    return folder


RESNET_KWARGS = {"width": 8, "stage_sizes": (1, 1), "stem": "imagenet"}


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.slow  # (CI budget) a fine-tuning run from imported torch weights
def test_finetune_runs_head_only_then_unfreezes_on_schedule(torch_resnet, tmp_path):
    data = _image_folder(str(tmp_path / "images"))
    workdir = str(tmp_path / "run")
    c = tiny_config(dataset=f"folder:{data}", image_size=16, augment="", batch_size=12,
                    num_steps=6, checkpoint_every_steps=1, keep_checkpoints=10,
                    optimizer="sgd", learning_rate=0.05, weight_decay=0.0,
                    init_from=torch_resnet, unfreeze_epochs=((r"(?!head/).*", 1),),
                    lr_multipliers=((r"head/.*", 10.0),), head_dropout_rate=0.1)
    c.model_kwargs = RESNET_KWARGS
    summary = train.run(c, workdir)  # 36 train images / 12 = 3 steps per epoch
    # Colour blobs: the fine-tuned model separates the 12 test images (1.0 measured).
    assert summary["steps"] == 6 and summary["final_eval"]["accuracy"] >= 0.9

    _, pretrained = weights.load(torch_resnet, "resnet18", num_classes=3, **RESNET_KWARGS)
    states = {s: checkpoint.load_state(os.path.join(workdir, "checkpoints", str(s)))
              for s in (1, 3, 6)}
    backbone = {s: {k: v for k, v in st["params"].items() if k != "head"}
                for s, st in states.items()}
    pre_backbone = {k: v for k, v in pretrained["params"].items() if k != "head"}
    # Epoch 0 (steps 1-3): the imported backbone is untouched, the new head learns.
    assert _leaves_equal(backbone[1], pre_backbone) and _leaves_equal(backbone[3], pre_backbone)
    assert not _leaves_equal(states[1]["params"]["head"], states[3]["params"]["head"])
    # Epoch 1 (steps 4-6): every backbone parameter moves.
    for a, b in zip(jax.tree.leaves(backbone[6]), jax.tree.leaves(pre_backbone), strict=True):
        assert not np.array_equal(a, b)
    # The pretrained conventions (ImageNet mean/std for a Hugging Face ResNet) were applied.
    with open(os.path.join(workdir, "config.json")) as f:
        assert tuple(json.load(f)["mean"]) == weights.IMAGENET["mean"]

    # A jaxcls training checkpoint is itself a starting point (fine-tune your own run),
    # here as a linear probe trained with AdamW and weight decay: the frozen backbone stays
    # bit-identical (no update, no decay), the head moves, and only the head has moments.
    probe = str(tmp_path / "probe")
    c2 = tiny_config(dataset=f"folder:{data}", image_size=16, augment="", batch_size=12,
                     num_steps=2, init_from=os.path.join(workdir, "checkpoints", "6"),
                     freeze=(r"(?!head/).*",), learning_rate=0.05, weight_decay=0.1,
                     optimizer="adamw")
    c2.model_kwargs = RESNET_KWARGS
    train.run(c2, probe)
    end = checkpoint.load_state(os.path.join(probe, "checkpoints", "2"))
    assert _leaves_equal({k: v for k, v in end["params"].items() if k != "head"}, backbone[6])
    assert not _leaves_equal(end["params"]["head"], states[6]["params"]["head"])
    head_size = sum(x.size for x in jax.tree.leaves(end["params"]["head"]))
    moments = sum(np.size(x) for x in jax.tree.leaves(end["opt_state"]) if np.ndim(x) > 0)
    assert moments == 2 * head_size  # Adam's mu and nu of the head only
    # Same class count, new classes: init_new_head swaps the head and keeps the backbone.
    c2.init_new_head = True
    train.run(c2, str(tmp_path / "probe_new_head"))
    end = checkpoint.load_state(os.path.join(tmp_path, "probe_new_head", "checkpoints", "2"))
    assert _leaves_equal({k: v for k, v in end["params"].items() if k != "head"}, backbone[6])
    assert not _leaves_equal(end["params"]["head"], states[6]["params"]["head"])
