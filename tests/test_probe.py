"""jaxcls.probe: the features are exactly the head's input; the probe equals scikit-learn."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jaxcls import models, weights
from jaxcls.classic import baseline
from jaxcls.probe import features
from jaxcls.probe.__main__ import network, probe


@pytest.mark.parametrize("name,size", [("lenet5", 32),
                                       pytest.param("resnet18", 32, marks=pytest.mark.slow)])
def test_head_inputs_times_the_head_are_the_logits(name, size):
    # Any zoo model: what head_inputs returns, fed through the head's own Dense, gives the
    # model's logits, so the probe sees exactly the classifier's input.
    model = models.create(name, 7, **({"width": 8} if name == "resnet18" else {}))
    x = jax.random.normal(jax.random.key(0), (3, size, size, 3))
    variables = model.init(jax.random.key(1), x)
    feats = features.head_inputs(model, variables, x)
    head = variables["params"]["head"]
    np.testing.assert_allclose(feats @ head["kernel"] + head["bias"],
                               model.apply(variables, x, train=False), rtol=1e-5, atol=1e-5)


def test_probe_of_saved_weights_equals_scikit_learn_on_the_same_features(tmp_path):
    model = models.create("lenet5", 10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    ckpt = weights.Checkpoint(str(tmp_path / "src"), "jaxcls", {}, {},
                              {"mean": (0.5,) * 3, "std": (0.25,) * 3, "crop_frac": 1.0}, [])
    weights.save(str(tmp_path / "w"), "lenet5", variables, ckpt)
    result = probe(None, str(tmp_path / "w"), "lenet5", "digits", str(tmp_path / "out"),
                   cv=2, pictures=False)

    data = baseline.load("digits", 32, 0)
    feats = [np.asarray(features.head_inputs(model, variables, (jnp.asarray(
        im, jnp.float32) / 255 - 0.5) / 0.25)) for im in (data.train_images, data.images)]
    c = result["method"]["best_params"]["clf__C"]
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    acc = float((ref.fit(feats[0], data.train_labels).predict(feats[1]) == data.labels).mean())
    assert result["accuracy"] == pytest.approx(acc, abs=1 / len(data.labels))
    assert acc > 0.8  # a random LeNet's features still separate the digits linearly
    assert 0.5 < result["knn_accuracy"] <= 1.0
    on_disk = json.loads((tmp_path / "out" / "eval" / "test" / "metrics.json").read_text())
    assert on_disk["method"]["knn_accuracy"] == result["knn_accuracy"]
    cache = np.load(tmp_path / "out" / "features_test.npz")
    np.testing.assert_allclose(cache["features"], feats[1], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="exactly one of --workdir"):
        probe(None, None, None, "digits", None)


def test_probe_of_weights_without_a_head(tmp_path):
    # Encoders saved without a classifier (CLIP's image tower, a self-supervised backbone)
    # are probed on their features all the same.
    model = models.create("lenet5", 10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    headless = {"params": {k: v for k, v in variables["params"].items() if k != "head"}}
    ckpt = weights.Checkpoint(str(tmp_path / "src"), "jaxcls", {}, {},
                              {"mean": (0.5,) * 3, "std": (0.25,) * 3, "crop_frac": 1.0}, [])
    weights.save(str(tmp_path / "w"), "lenet5", headless, ckpt)
    assert weights.read(str(tmp_path / "w"), "lenet5").num_classes is None
    title, net, net_variables, *_ = network(None, str(tmp_path / "w"), "lenet5", "digits", 32)
    x = jax.random.normal(jax.random.key(1), (3, 32, 32, 3))
    np.testing.assert_allclose(features.head_inputs(net, net_variables, x),
                               features.head_inputs(model, variables, x), rtol=1e-6)
