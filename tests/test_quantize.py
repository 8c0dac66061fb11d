"""jaxcls.quantize: int8 models of a real (tiny, digits) run stay close to the float model,
are smaller, and evaluate/predict read them back exactly as the command measured them."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from jaxcls import calibration, evaluate, models, train
from jaxcls.data import augment, sources
from jaxcls.quantize import qat, schemes, table


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("quant") / "run")
    train.run(tiny_config(num_steps=60, model_kwargs={"width": 16, "stage_sizes": (1, 1)}),
              workdir)
    return workdir


def test_int8_weights_round_trip_within_half_a_step():
    w = jax.random.normal(jax.random.key(0), (3, 3, 4, 5)) * jnp.arange(1, 6)
    q = schemes.int8_weights({"conv": {"kernel": w, "bias": jnp.ones(5)}})
    assert q["conv"]["kernel"]["qvalue"].dtype == jnp.int8
    np.testing.assert_array_equal(q["conv"]["bias"], jnp.ones(5))  # biases stay float
    scale = np.max(np.abs(np.asarray(w)), axis=(0, 1, 2)) / 127  # per output channel
    back = schemes.float_weights(q)["conv"]["kernel"]
    assert np.all(np.abs(np.asarray(back) - np.asarray(w)) <= scale / 2 + 1e-7)


@pytest.mark.slow  # (CI budget) a training run, then each scheme quantized and evaluated
@pytest.mark.parametrize("scheme", schemes.SCHEMES)
def test_quantized_run_agrees_with_float_and_reloads(run_dir, scheme):
    result = table.quantize_run(run_dir, scheme, calibration=128, which="last", repeats=2)
    rows = result["rows"]
    assert rows["float32"]["top1"] > 0.5  # the tiny run learned something to preserve
    assert abs(rows[scheme]["top1"] - rows["float32"]["top1"]) <= 0.03
    ratio = rows[scheme]["param_bytes"] / rows["float32"]["param_bytes"]
    assert ratio < 0.4  # kernels at 1 byte instead of 4 (biases, norms and scales stay float)
    on_disk = json.load(open(os.path.join(schemes.directory(run_dir, scheme), "table.json")))
    assert on_disk["rows"] == rows

    # evaluate --quantized reads the saved model back: the same top-1 as the table, its own
    # output folder, and the float model's stored temperature untouched.
    metrics = evaluate.evaluate([run_dir], "test", "last", quantized=scheme, pictures=False)
    assert metrics["accuracy"] == pytest.approx(rows[scheme]["top1"])
    assert os.path.exists(os.path.join(run_dir, "eval", f"test_{scheme}", "metrics.json"))
    stored = calibration.load_all(evaluate.resolve_checkpoint(run_dir, "last"))
    assert f"@{scheme}" in stored and "" not in stored  # keyed apart from the float model's
    float_run = evaluate.load_run(run_dir, "last")
    q_run = evaluate.load_run(run_dir, "last", quantized=scheme)
    x = np.asarray(sources.create(tiny_config()).eval.images[:64])
    fp = np.exp(np.asarray(jax.jit(evaluate.log_probs_fn(float_run))(float_run.variables, x)))
    qp = np.exp(np.asarray(jax.jit(evaluate.log_probs_fn(q_run))(q_run.variables, x)))
    assert np.mean(fp.argmax(1) == qp.argmax(1)) >= 0.9  # int8 keeps the decisions
    assert 0 < np.abs(fp - qp).mean() < 0.02  # close to the float model, not the same


def test_loading_an_unquantized_scheme_names_the_command(tmp_path):
    model = models.create("lenet5", 10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(FileNotFoundError, match="python -m jaxcls.quantize"):
        schemes.load(str(tmp_path / "quantized" / "w8"), model, variables)
    with pytest.raises(ValueError, match="--scheme='int4'"):
        schemes.check_scheme("int4")


@pytest.mark.slow  # (CI budget) a QAT training run, then PTQ of its weights
def test_quantization_aware_training_evaluates_what_int8_deployment_computes(tmp_path):
    # The evaluations logged during a QAT run are of the fake-quantized model; quantizing its
    # weights to int8 afterwards (PTQ w8a8, dynamic ranges: the same rounding) must give the
    # same predictions, while the float model of the same weights does not compute that.
    workdir = str(tmp_path / "qat")
    config = tiny_config(num_steps=30, eval_every_steps=30, quantization="w8a8",
                         model_kwargs={"width": 16, "stage_sizes": (1, 1)})
    train.run(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [r for r in map(json.loads, f) if r["split"] == "eval"][-1]
    assert logged["accuracy"] > 0.5
    run = evaluate.load_run(workdir, "last")
    qat_model = qat.training_model(run.model, "w8a8")
    assert jax.tree.structure(qat_model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
                                             train=False)) == jax.tree.structure(run.variables)
    int8_model, int8_variables = schemes.quantize(run.model, run.variables, "w8a8", 8)
    x = augment.normalize(jnp.asarray(sources.create(config).eval.images), config.mean,
                          config.std)
    fake = np.asarray(qat_model.apply(run.variables, x, train=False))
    int8 = np.asarray(int8_model.apply(int8_variables, x, train=False))
    plain = np.asarray(run.model.apply(run.variables, x, train=False))
    assert np.mean(fake.argmax(1) == int8.argmax(1)) >= 0.99
    assert np.abs(fake - int8).max() < 0.1 * np.abs(fake - plain).max()
    labels = sources.create(config).eval.labels
    # (Within 1%: the logged eval ran in batches of 32, so a near-tie may round differently.)
    assert np.mean(fake.argmax(1) == labels) == pytest.approx(logged["accuracy"], abs=0.01)
    with pytest.raises(ValueError, match="config.quantization='int4'"):
        train.validate(tiny_config(quantization="int4"))
