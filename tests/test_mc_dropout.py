"""MC dropout: the sampled masks are training's masks, the mean and uncertainty equal a direct
NumPy computation over separate forward passes, and evaluate/predict report them."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from jaxcls import evaluate, mc_dropout, predict, train
from jaxcls.data import sources


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(16)(x.reshape(x.shape[0], -1))
        x = nn.Dropout(0.5, deterministic=not train)(nn.relu(x))
        x = nn.Dropout(0.25, broadcast_dims=(0,), deterministic=not train)(x)
        return nn.Dense(3)(x)


def test_sampled_dropout_draws_trainings_masks():
    net, x = _Net(), jax.random.normal(jax.random.key(0), (4, 2, 2, 3))
    variables = net.init(jax.random.key(1), x)
    rngs = {"dropout": jax.random.key(7)}
    trained = net.apply(variables, x, train=True, rngs=rngs)
    with nn.intercept_methods(mc_dropout.sampled_dropout):
        sampled = net.apply(variables, x, train=False, rngs=rngs)
    np.testing.assert_allclose(sampled, trained, rtol=1e-6)
    assert not np.allclose(sampled, net.apply(variables, x, train=False))
    assert mc_dropout.dropout_rates(net, variables, 2) == [0.5, 0.25]


def test_sampled_log_probs_equal_separate_passes():
    net, x = _Net(), jax.random.normal(jax.random.key(0), (5, 2, 2, 3))
    variables = net.init(jax.random.key(1), x)

    def predict_fn(v, images, rngs=None):
        return jax.nn.log_softmax(net.apply(v, images, train=False, rngs=rngs))

    out = jax.jit(mc_dropout.sampled_log_probs(predict_fn, 6, seed=3))(variables, x)
    probs = np.stack([np.asarray(jax.nn.softmax(net.apply(
        variables, x, train=True, rngs={"dropout": jax.random.fold_in(jax.random.key(3), s)})))
        for s in range(6)]).astype(np.float64)
    mean = probs.mean(0)
    np.testing.assert_allclose(np.exp(out["log_probs"]), mean, rtol=1e-5)
    expected_entropy = -(probs * np.log(probs)).sum(-1).mean(0)
    np.testing.assert_allclose(out["expected_entropy"], expected_entropy, rtol=1e-5)
    u = mc_dropout.uncertainty(np.asarray(out["log_probs"]), np.asarray(out["expected_entropy"]))
    entropy = -(mean * np.log(mean)).sum(-1)
    np.testing.assert_allclose(u["predictive_entropy"], entropy, rtol=1e-5)
    np.testing.assert_allclose(u["mutual_information"], entropy - expected_entropy,
                               atol=1e-6)
    assert np.all(u["mutual_information"] > 1e-4)  # the samples disagree


def test_evaluate_and_predict_with_mc_dropout(tmp_path):
    workdir = str(tmp_path / "run")
    train.run(tiny_config(num_steps=20, head_dropout_rate=0.5), workdir)
    plain = evaluate.evaluate([workdir], pictures=False)
    mc = evaluate.evaluate([workdir], mc_dropout=4)
    out = os.path.join(workdir, "eval", "test_mc4")
    summary = mc["mc_dropout_summary"]
    # Dropout off inside the MC evaluation is the plain evaluation.
    assert summary["deterministic"]["accuracy"] == pytest.approx(plain["accuracy"], abs=1e-9)
    assert summary["deterministic"]["ece_15"] == pytest.approx(plain["ece_15"], abs=1e-9)
    assert mc["accuracy"] != plain["accuracy"] or mc["log_loss"] != plain["log_loss"]
    saved = np.load(os.path.join(out, "predictions.npz"))
    assert summary["mean_mutual_information"] == pytest.approx(
        float(saved["mutual_information"].mean()), rel=1e-6)
    assert np.all(saved["predictive_entropy"] >= saved["mutual_information"])
    assert "MC dropout (4 samples)" in open(os.path.join(out, "report.html")).read()
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["mc_dropout"] == 4
    # predict: the same model and samples give the same uncertainty for the same image.
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    source = sources.create(tiny_config()).eval
    from PIL import Image
    Image.fromarray(source[0]["image"]).save(image_dir / "0.png")
    (record,) = predict.predict([workdir], [str(image_dir)], mc_dropout=4, progress=False)
    assert record["mutual_information"] > 0
    assert record["predictive_entropy"] >= record["mutual_information"]


def test_mc_dropout_needs_a_dropout_layer_and_two_samples(tmp_path):
    config = tiny_config()
    model = train.create_model(config, 10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    rates = mc_dropout.dropout_rates(model, variables, 8)
    assert rates == []
    with pytest.raises(ValueError, match="head_dropout_rate"):
        mc_dropout.check_samples(4, rates, "W")
    with pytest.raises(ValueError, match="2 or more"):
        mc_dropout.check_samples(1, [0.5], "W")
    with pytest.raises(ValueError, match="exported"):
        list(predict.predict(None, [], exported=str(tmp_path), mc_dropout=4))
