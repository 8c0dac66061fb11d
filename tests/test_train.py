"""The training loop, step maths, optimizer and config errors, on tiny models in-process."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcls import checkpoint, evaluate, losses, metrics, models, optim, steps, train
from jaxcls.data import sources
from tests.conftest import ROOT, tiny_config


def test_digits_training_learns(workdir):
    config = tiny_config(num_steps=150, log_every_steps=50, eval_every_steps=75,
                         label_smoothing=0.1, warmup_steps=10)
    summary = train.run(config, workdir)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    evals = [r for r in rows if r["split"] == "eval"]
    trains = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in evals] == [75, 150]
    assert {"loss", "accuracy", "top5"} <= set(evals[-1])
    assert {"loss", "accuracy", "grad_norm", "learning_rate", "img_per_s"} <= set(trains[-1])
    assert evals[-1]["accuracy"] > 0.85  # 10 classes: chance is 0.1
    assert trains[-1]["loss"] < trains[0]["loss"] * 0.6
    assert summary["best_accuracy"] == max(r["accuracy"] for r in evals)
    assert os.path.isdir(summary["best_checkpoint"])
    assert json.load(open(os.path.join(workdir, "config.json")))["model"] == "resnet18"
    assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    # Rerunning a finished workdir resumes at the end: no new steps, same best.
    again = train.run(config, workdir)
    assert again["steps"] == 150 and again["best_accuracy"] == summary["best_accuracy"]


@pytest.mark.slow  # (CI budget) two training runs with corrupt files
@pytest.mark.parametrize("cache_max_gib", [0.0, 4.0], ids=["streaming", "cached"])
def test_unreadable_files_are_skipped_and_counted_in_the_summary(tmp_path, cache_max_gib):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("test", 2)):
        for c in ("a", "b"):
            os.makedirs(tmp_path / split / c)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(
                    tmp_path / split / c / f"{i}.png")
    for bad in ("train/a/bad.jpg", "train/b/bad.png", "test/a/bad.jpg"):
        (tmp_path / bad).write_bytes(b"\xff\xd8 not really an image")
    # 10 train files at batch 5: two steps see every file once.
    config = tiny_config(dataset=f"folder:{tmp_path}", batch_size=5, num_steps=2,
                         cache_max_gib=cache_max_gib)
    summary = train.run(config, str(tmp_path / "run"))
    assert summary["skipped_files"] == 3
    # The final eval counted exactly the 4 readable test images: its accuracy is that of the
    # same checkpoint's predictions on them.
    run = evaluate.load_run(str(tmp_path / "run"), "last")
    predicted = evaluate.predict_source(run, sources.create(run.config).eval)
    assert len(predicted["labels"]) == 4
    accuracy = np.mean(predicted["log_probs"].argmax(1) == predicted["labels"])
    assert summary["final_eval"]["accuracy"] == pytest.approx(accuracy)


@pytest.mark.slow  # (CI budget)
def test_nan_loss_stops_and_keeps_last_good_checkpoint(workdir):
    train.run(tiny_config(num_steps=3, final_eval=False), workdir)
    # Resume with a NaN learning rate: step 4 still has a finite loss, its update poisons the
    # parameters, and step 5's loss is NaN.
    with pytest.raises(FloatingPointError, match="Last good checkpoint.*checkpoints/3"):
        train.run(tiny_config(num_steps=6, learning_rate=float("nan")), workdir)
    saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                   if d.isdigit())
    assert saved == [3]
    state = checkpoint.load_state(os.path.join(workdir, "checkpoints", "3"))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


class _Linear(nn.Module):
    """No BatchNorm: micro-batching must then be exact."""
    num_classes: int = 5

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1).astype(jnp.float32))


def _run_steps(config, batch, n=2):
    model = _Linear()
    state = steps.init_state(model, optax.identity(), jax.random.key(0), config.image_size)
    tx = optim.create_optimizer(config, optim.create_schedule(config, 10, 100), state.params, 10)
    state = steps.init_state(model, tx, jax.random.key(0), config.image_size)
    step = jax.jit(steps.make_train_step(model, tx, config))
    for _ in range(n):
        state, m = step(state, batch, jax.random.key(1))
    return state, m


def _batch(n, size=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": jnp.asarray(rng.integers(0, 256, (n, size, size, 3), np.uint8)),
            "label": jnp.asarray(rng.integers(0, 5, n).astype(np.int32)),
            "mask": jnp.ones((n,), jnp.float32)}


def test_gradient_accumulation_equals_one_big_batch():
    base = tiny_config(image_size=4, augment="", batch_size=8, optimizer="sgd",
                       learning_rate=0.1)
    batch = _batch(8)
    one, m1 = _run_steps(base, batch)
    base.grad_accum_steps = 4
    four, m4 = _run_steps(base, batch)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m1.compute()["loss"], m4.compute()["loss"], rtol=1e-6)


def test_masked_examples_do_not_count():
    config = tiny_config(image_size=4, augment="", batch_size=8, optimizer="sgd")
    full = _batch(8)
    padded = {k: v.at[5:].set(0) for k, v in full.items()}  # last 3: zeros with mask 0
    real = {k: v[:5] for k, v in full.items()}
    a, ma = _run_steps(config, padded, n=1)
    b, mb = _run_steps(config, real, n=1)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ma.compute()["accuracy"], mb.compute()["accuracy"])


def test_label_smoothing_cross_entropy_matches_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    eps = 0.1
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = np.eye(4)[labels] * (1 - eps) + eps / 4
    ref = -(targets * logp).sum(-1)
    got = losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), eps)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_schedules():
    c = tiny_config(learning_rate=1.0, warmup_steps=10, min_learning_rate=0.01)
    cos = optim.create_schedule(c, steps_per_epoch=10, total_steps=110)
    assert float(cos(0)) == 0.0 and float(cos(5)) == pytest.approx(0.5)
    assert float(cos(10)) == pytest.approx(1.0)
    assert float(cos(60)) == pytest.approx(0.505, abs=1e-3)  # half-way down the cosine
    assert float(cos(110)) == pytest.approx(0.01)
    c.schedule, c.decay_epochs, c.decay_factor = "step", (3, 6), 0.1
    step = optim.create_schedule(c, steps_per_epoch=10, total_steps=100)
    assert [round(float(step(s)), 6) for s in (29, 30, 59, 60, 99)] == [1, 0.1, 0.1, 0.01, 0.01]
    c.schedule, c.warmup_steps = "constant", None
    assert float(optim.create_schedule(c, 10, 100)(77)) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        c.schedule = "linear"
        optim.create_schedule(c, 10, 100)


def test_weight_decay_skips_biases_and_norm_scales():
    model = models.create("resnet18", 3, width=4, stage_sizes=(1,))
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    c = tiny_config(optimizer="adamw", weight_decay=0.5, learning_rate=0.1)
    tx = optim.create_optimizer(c, optax.constant_schedule(0.1), params, 10)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    changed = jax.tree.map(lambda u: bool(jnp.any(u != 0)), updates)
    assert changed["head"]["kernel"] and changed["stem_conv"]["kernel"]
    assert not changed["head"]["bias"] and not changed["stem_bn"]["scale"]


def test_config_errors_name_the_key(workdir):
    bad = tiny_config()
    bad.lerning_rate = 0.1
    with pytest.raises(ValueError, match="lerning_rate"):
        train.run(bad, workdir)
    with pytest.raises(ValueError, match="batch_size"):
        train.run(tiny_config(batch_size=30, grad_accum_steps=4), workdir)
    with pytest.raises(ValueError, match="num_epochs or config.num_steps"):
        train.run(tiny_config(num_steps=None), workdir)
    with pytest.raises(ValueError, match="dataset"):
        train.run(tiny_config(dataset="imagenet"), workdir)
    with pytest.raises(ValueError, match="config.dropout_rate=0.1 does not apply to 'resnet18'"):
        train.run(tiny_config(dropout_rate=0.1), workdir)
    with pytest.raises(ValueError, match="config.freeze: bad regex"):
        train.run(tiny_config(freeze=("head[",)), workdir)
    with pytest.raises(ValueError, match="config.lr_multipliers: each entry"):
        train.run(tiny_config(lr_multipliers=((".*",),)), workdir)
    with pytest.raises(FileNotFoundError, match="config.init_from='nowhere'"):
        train.run(tiny_config(init_from="nowhere"), workdir)
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))


@pytest.mark.parametrize("override,name", [("--config.bogus_key=1", "bogus_key"),
                                           ("--config.batch_size=abc", "batch_size")])
def test_cli_rejects_bad_overrides_before_work(override, name, workdir):
    proc = subprocess.run([sys.executable, "-m", "jaxcls.main", "--config=configs/default.py",
                           f"--workdir={workdir}", override],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert name in proc.stderr
    assert not os.path.exists(workdir)


def test_run_shape_warnings_and_top5_needs_six_classes():
    c = tiny_config(batch_size=64, warmup_steps=50)
    warnings = train.check_run_shape(c, num_train=40, num_classes=10, total_steps=20,
                                     steps_per_epoch=1)
    assert warnings == [
        "config.batch_size=64 exceeds the 40 training examples: every step repeats examples "
        "(an epoch is 1 step)",
        "the warm-up (50 steps) is longer than the run (20 steps): the learning rate rises for "
        "the whole run, reaching config.learning_rate=0.01 only at the last step, and never "
        "decays"]
    assert train.check_run_shape(tiny_config(), 1000, 10, 20, 31) == []
    with pytest.raises(ValueError, match=r"config.early_stopping_metric='top5': with 5 classes"):
        train.check_run_shape(tiny_config(early_stopping_metric="top5", eval_every_steps=5),
                              1000, 5, 20, 31)
    # Fewer than 6 classes: no top5 in train or eval metrics, nor in offline ones.
    logits, labels = jnp.eye(5)[:4] * 3.0, jnp.array([0, 1, 3, 2])
    m = metrics.with_grad_norm(metrics.gather(jnp.ones(4), logits, labels, jnp.ones(4)),
                               jnp.float32(1.0))
    assert set(metrics.to_host(m)) == {"loss", "accuracy", "grad_norm"}
    six = metrics.gather(jnp.ones(4), jnp.eye(6)[:4], labels, jnp.ones(4))
    assert set(metrics.to_host(six)) == {"loss", "accuracy", "top5"}
    probs = np.full((4, 5), 0.2)
    assert "top5" not in metrics.offline(np.array([0, 1, 3, 2]), probs, list("abcde"))


def test_only_process_zero_logs_info(monkeypatch):
    from absl import logging as absl_logging

    from jaxcls import writers

    before = absl_logging.get_verbosity()
    try:
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(jax, "process_index", lambda: 0)
        writers.quiet_other_processes()
        assert absl_logging.get_verbosity() == before
        monkeypatch.setattr(jax, "process_index", lambda: 1)
        writers.quiet_other_processes()
        assert absl_logging.get_verbosity() == absl_logging.WARNING
    finally:
        absl_logging.set_verbosity(before)


def test_a_fast_decode_logs_one_line(tmp_path, caplog):
    from PIL import Image

    from jaxcls.data import sources

    paths = []
    for i in range(30):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(paths[-1])
    with caplog.at_level("INFO", logger="absl"):
        cached, bad = sources.cache_in_memory(sources.FileSource(paths, [0] * 30, 8, 1.0), 1)
    decode_lines = [r.getMessage() for r in caplog.records if "decod" in r.getMessage()]
    assert decode_lines == ["decoded 30 images into memory"] and not bad and len(cached) == 30


def test_bfloat16_end_to_end_run_keeps_float32_state_and_tracks_float32(tmp_path):
    # The whole loop in bfloat16 compute: parameters, optimizer state and checkpoints stay
    # float32, and the loss follows the float32 run's closely from the same initialisation.
    rows = {}
    for dtype in ("float32", "bfloat16"):
        workdir = str(tmp_path / dtype)
        train.run(tiny_config(num_steps=8, dtype=dtype), workdir)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rows[dtype] = [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]
        state = checkpoint.load_state(evaluate.resolve_checkpoint(workdir, "last"))
        assert {x.dtype for x in jax.tree.leaves(state["params"])} == {np.dtype("float32")}
    assert len(rows["bfloat16"]) == 8 and all(np.isfinite(rows["bfloat16"]))
    np.testing.assert_allclose(rows["bfloat16"], rows["float32"], rtol=0.05)
    assert rows["bfloat16"] != rows["float32"]  # it did compute in bfloat16
