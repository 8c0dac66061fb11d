"""Knowledge distillation (jaxcls/distill/): the losses against NumPy, a distilled run's eval
agreement against an offline computation, resume with a teacher, and config errors."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcls import distill, evaluate, losses, steps, train
from jaxcls.data import augment, sources
from tests.conftest import run_python, tiny_config


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_kl_divergence_by_hand():
    # p_teacher = (3/4, 1/4), p_student = (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2).
    want = 0.75 * np.log(1.5) + 0.25 * np.log(0.5)
    got = distill.kl_divergence(jnp.zeros((1, 2)), jnp.asarray([[np.log(3.0), 0.0]]))
    np.testing.assert_allclose(got, [want], rtol=1e-6)
    # The same probabilities at T = 2 (teacher logits doubled): x T^2.
    got = distill.kl_divergence(jnp.zeros((1, 2)), jnp.asarray([[2 * np.log(3.0), 0.0]]), 2.0)
    np.testing.assert_allclose(got, [4 * want], rtol=1e-6)


def test_distillation_losses_equal_numpy():
    rng = np.random.default_rng(0)
    s, s2, t = (rng.normal(size=(6, 5)).astype(np.float32) * 2 for _ in range(3))
    labels = rng.integers(0, 5, 6)
    alpha, temp = 0.7, 3.0
    rows = np.arange(6)
    ce = -_log_softmax(s)[rows, labels]
    hard = -_log_softmax(s)[rows, t.argmax(-1)]
    log_pt, log_ps = _log_softmax(t / temp), _log_softmax(s / temp)
    kl = temp**2 * np.sum(np.exp(log_pt) * (log_pt - log_ps), -1)
    want = {"kl": (1 - alpha) * ce + alpha * kl, "hard": (1 - alpha) * ce + alpha * hard,
            "function_matching": kl}
    for name, value in want.items():
        got, logits = distill.distillation_loss(name, jnp.asarray(s), jnp.asarray(labels),
                                                jnp.asarray(t), losses.softmax_cross_entropy,
                                                alpha, temp)
        np.testing.assert_allclose(got, value, rtol=1e-5, err_msg=name)
        np.testing.assert_array_equal(logits, s)
    # deit: the labels on the class head, the teacher's argmax on the distillation head.
    got, logits = distill.distillation_loss("deit", (jnp.asarray(s), jnp.asarray(s2)),
                                            jnp.asarray(labels), jnp.asarray(t),
                                            losses.softmax_cross_entropy, alpha, temp)
    want = (1 - alpha) * ce + alpha * -_log_softmax(s2)[rows, t.argmax(-1)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(logits, (s + s2) / 2, rtol=1e-6)
    np.testing.assert_array_equal(distill.agreement(jnp.asarray(s), jnp.asarray(t)),
                                  (s.argmax(-1) == t.argmax(-1)).astype(np.float32))


class _Linear(nn.Module):
    num_classes: int = 5

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1).astype(jnp.float32))


def test_train_step_with_a_teacher_takes_the_distillation_gradient():
    """One SGD step: the teacher sees the images in its own normalisation, its logits enter
    the KD loss, and only the student's parameters move, by the KD loss's gradient."""
    config = tiny_config(image_size=4, augment="", weight_decay=0.0)
    config.distill.teacher, config.distill.alpha, config.distill.temperature = "x", 0.6, 2.0
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (8, 4, 4, 3), np.uint8)),
             "label": jnp.asarray(rng.integers(0, 5, 8).astype(np.int32)),
             "mask": jnp.ones((8,), jnp.float32)}
    student, teacher_module = _Linear(), _Linear()
    x = jnp.zeros((1, 4, 4, 3))
    teacher_vars = teacher_module.init(jax.random.key(7), x)
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)  # the teacher's own normalisation
    teacher = distill.Teacher((), (teacher_module,), (mean,), (std,))
    tx = optax.sgd(0.1)
    state = steps.init_state(student, tx, jax.random.key(0), 4)
    new, m = jax.jit(steps.make_train_step(student, tx, config, teacher=teacher))(
        state, batch, jax.random.key(1), (teacher_vars,))

    teacher_logits = teacher_module.apply(teacher_vars, augment.normalize(batch["image"], mean,
                                                                          std))

    def reference(params):
        logits = student.apply({"params": params}, augment.normalize(
            batch["image"], config.mean, config.std))
        per_example, _ = distill.distillation_loss(
            "kl", logits, batch["label"], teacher_logits, losses.make_loss(config), 0.6, 2.0)
        return jnp.mean(per_example)

    loss, grads = jax.value_and_grad(reference)(state.params)
    np.testing.assert_allclose(m.compute()["loss"], loss, rtol=1e-5)
    want = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, grads)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A wider tiny digits run (16 channels), checkpoints at steps 5 and 10."""
    workdir = str(tmp_path_factory.mktemp("teacher") / "run")
    config = tiny_config(num_steps=10, checkpoint_every_steps=5, log_every_steps=10)
    config.model_kwargs.width = 16
    train.run(config, workdir)
    return workdir


def _student(teacher: str, **overrides):
    config = tiny_config(schedule="constant", checkpoint_every_steps=100, **overrides)
    config.distill.teacher = teacher
    config.distill.temperature = 2.0
    return config


def _params(workdir: str):
    return evaluate.load_run(workdir, "last").variables


@pytest.mark.slow  # (CI budget) a teacher and three student runs, ~50 s CPU
def test_distilled_run_resumes_exactly_and_reports_agreement(teacher_dir, tmp_path):
    ensemble = f"{teacher_dir}/checkpoints/5,{teacher_dir}"  # two members: step 5 and best
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    summary = train.run(_student(ensemble, num_steps=6), full)
    train.run(_student(ensemble, num_steps=3), resumed)
    again = train.run(_student(ensemble, num_steps=6), resumed)
    assert again["steps"] == 6
    for a, b in zip(jax.tree.leaves(_params(full)), jax.tree.leaves(_params(resumed)), strict=True):
        np.testing.assert_array_equal(a, b)
    rows = [json.loads(line) for line in open(os.path.join(resumed, "metrics.jsonl"))]
    want = [json.loads(line) for line in open(os.path.join(full, "metrics.jsonl"))]
    # The resumed log holds each step once, with the uninterrupted run's losses.
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 7))
    np.testing.assert_allclose([r["loss"] for r in rows if r["split"] == "train"],
                               [r["loss"] for r in want if r["split"] == "train"], rtol=1e-6)

    # The eval's agreement and KL equal those of the saved student and teachers offline.
    final = summary["final_eval"]
    run = evaluate.load_run(full, "last")
    dataset = sources.create(run.config)
    student = evaluate.predict_source(run, dataset.eval)["log_probs"]
    teachers = [evaluate.predict_source(evaluate.load_run(teacher_dir, w), dataset.eval)
                ["log_probs"] for w in ("5", "best")]
    # Mean logits = mean log-probabilities up to a per-example constant.
    teacher = _log_softmax(np.mean(teachers, axis=0))
    assert final["teacher_agreement"] == pytest.approx(
        np.mean(student.argmax(-1) == teacher.argmax(-1)), abs=1e-6)
    assert final["teacher_kl"] == pytest.approx(
        np.mean(np.sum(np.exp(teacher) * (teacher - student), -1)), rel=1e-4)

    # Resuming with another teacher fails instead of mixing two teachers in one run.
    with pytest.raises(ValueError, match="different weights"):
        train.run(_student(f"{teacher_dir}/checkpoints/5", num_steps=8), resumed)


@pytest.mark.parametrize("change,error,message", [
    (dict(teacher="/no/such/run"), FileNotFoundError, r"config.distill.teacher.*/no/such/run"),
    (dict(teacher="nosuchnet:/tmp"), ValueError, "'nosuchnet' is not a registered model"),
    (dict(teacher="/tmp"), ValueError, "MODEL:PATH"),
    (dict(teacher="/tmp", loss="soft"), ValueError, "config.distill.loss='soft'"),
    (dict(teacher="/tmp", loss="deit"), ValueError, "distillation head"),
    (dict(teacher="/tmp", teacher_view="clean"), ValueError, "config.distill.teacher_view"),
    (dict(teacher="/tmp", alpha=1.5), ValueError, "config.distill.alpha"),
    (dict(teacher="/tmp", loss="function_matching", teacher_view="independent"), ValueError,
     "function_matching"),
    (dict(temprature=2.0), ValueError, r"unknown config.distill key\(s\) \['temprature'\]"),
])
def test_bad_distill_config_fails_naming_the_key(change, error, message):
    config = tiny_config()
    with config.distill.unlocked():
        for k, v in change.items():
            config.distill[k] = v
    with pytest.raises(error, match=message):
        train.validate(config)


def test_teacher_weights_are_placed_by_the_students_fsdp_rules(tmp_path):
    """A MODEL:PATH teacher (a converted jaxcls checkpoint) on 8 simulated devices: with
    sharding='fsdp' its big arrays are split over 'data' like the student's state."""
    code = f"""
import jax, jax.numpy as jnp
from jaxcls import distill, models, sharding, weights
from tests.conftest import run_python, tiny_config
kwargs = dict(width=16, stage_sizes=(1, 1), stem="cifar")
model = models.create("resnet18", 10, **kwargs)
v = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
weights.save({str(tmp_path / 't')!r}, "resnet18", jax.device_get(v), weights.Checkpoint(
    "init", "jaxcls", {{}}, kwargs, {{"mean": (0.5,) * 3, "std": (0.5,) * 3}}, []))
config = tiny_config(sharding="fsdp", fsdp_min_size=1024)
config.distill.teacher = "resnet18:" + {str(tmp_path / 't')!r}
teacher, (tv,) = distill.load(config, 10, sharding.make_mesh(config.mesh))
split = [x.sharding.spec for x in jax.tree.leaves(tv) if x.size >= 1024]
assert split and all("data" in spec for spec in split), split
assert teacher.means == ((0.5,) * 3,)
print("ok")
"""
    proc = run_python(code, devices=8)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and out.strip().endswith("ok"), out


@pytest.mark.slow  # (CI budget) three compilations
def test_benchmark_step_with_a_teacher_costs_its_forward(tmp_path):
    """jaxcls.benchmark's compiled step carries the teacher: more FLOPs than without it, by
    about the teacher's forward pass (XLA's cost analysis)."""
    from jaxcls import benchmark, models, weights

    kwargs = dict(width=16, stage_sizes=(1, 1), stem="cifar")
    model = models.create("resnet18", 10, **kwargs)
    v = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    weights.save(str(tmp_path / "t"), "resnet18", jax.device_get(v), weights.Checkpoint(
        "init", "jaxcls", {}, kwargs, {"mean": (0.5,) * 3, "std": (0.5,) * 3}, []))
    config = tiny_config(dataset="synthetic")
    config.distill.teacher = f"resnet18:{tmp_path / 't'}"
    with_teacher = benchmark.CompiledStep(config)
    with_teacher()  # runs with the teacher's variables
    config.distill.teacher = ""
    alone = benchmark.CompiledStep(config)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
        v, jnp.zeros((config.batch_size, 8, 8, 3))).compile().cost_analysis()
    forward = (forward[0] if isinstance(forward, list) else forward)["flops"]
    assert with_teacher.flops - alone.flops == pytest.approx(forward, rel=0.2)
