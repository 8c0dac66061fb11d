"""Domain adaptation (jaxcls/adapt/): the gradient reversal layer and DANN's schedule."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcls import checkpoint, train
from jaxcls.adapt import dann, grl
from tests.conftest import tiny_config


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
    upstream = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4)), jnp.float32)
    lam = jnp.float32(0.37)
    y, vjp = jax.vjp(grl.reverse_gradient, x, lam)
    np.testing.assert_array_equal(y, x)
    dx, dlam = vjp(upstream)
    np.testing.assert_allclose(dx, -0.37 * upstream, rtol=1e-6)
    assert float(dlam) == 0.0
    # Through a loss: d/dx sum(w * grl(x)) = -lam * w.
    g = jax.grad(lambda x: jnp.sum(upstream * grl.reverse_gradient(x, lam)))(x)
    np.testing.assert_allclose(g, -0.37 * upstream, rtol=1e-6)


def test_dann_lambda_schedule():
    p = np.array([0.0, 0.1, 0.5, 1.0])
    np.testing.assert_allclose(grl.dann_lambda(jnp.asarray(p)), 2 / (1 + np.exp(-10 * p)) - 1,
                               rtol=1e-6)
    assert float(grl.dann_lambda(0.0)) == 0.0 and float(grl.dann_lambda(1.0)) > 0.999


def test_domain_loss_is_binary_cross_entropy_of_the_domains():
    clf = dann.DomainClassifier(hidden=0)
    src = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3)), jnp.float32)
    tgt = src + 1.0
    params = clf.init(jax.random.key(0), src)["params"]
    ls, lt = dann.domain_loss(clf, params, src, tgt, jnp.float32(1.0))
    w, b = np.asarray(params["out"]["kernel"])[:, 0], float(params["out"]["bias"][0])
    z_s, z_t = np.asarray(src) @ w + b, np.asarray(tgt) @ w + b
    np.testing.assert_allclose(ls, np.log1p(np.exp(z_s)), rtol=1e-5)  # -log(1 - sigmoid)
    np.testing.assert_allclose(lt, np.log1p(np.exp(-z_t)), rtol=1e-5)  # -log sigmoid


def _inverted_digits(root) -> str:
    """The bundled digits, inverted (255 - x), as a folder with train/ and test/ class
    folders: a target domain with held-out labels."""
    from PIL import Image

    from jaxcls.data import sources

    ds = sources.digits(8, 0.2, 0)
    for split, source in (("train", ds.train), ("test", ds.eval)):
        for i in range(len(source)):
            ex = source[i]
            folder = root / split / str(int(ex["label"]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(255 - ex["image"]).save(folder / f"{i}.png")
    return str(root)


@pytest.mark.slow  # (CI budget) two short DANN runs, ~30 s CPU
def test_dann_run_evaluates_the_target_and_resumes_exactly(tmp_path):
    target = _inverted_digits(tmp_path / "inverted")
    config = tiny_config(num_steps=6, checkpoint_every_steps=3)
    config.domain_adaptation.target = f"folder:{target}"
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    summary = train.run(config, full)
    assert set(summary["final_eval_target"]) >= {"accuracy", "loss"}
    rows = [json.loads(line) for line in open(os.path.join(full, "metrics.jsonl"))]
    assert [r["step"] for r in rows if r["split"] == "eval_target"] == [6]
    final = checkpoint.load_state(os.path.join(full, "checkpoints", "6"))
    start = checkpoint.load_state(os.path.join(full, "checkpoints", "3"))
    assert dann.PARAMS_KEY in final["params"]  # the domain classifier trains with the model
    assert not np.allclose(final["params"][dann.PARAMS_KEY]["out"]["kernel"],
                           start["params"][dann.PARAMS_KEY]["out"]["kernel"])
    # A run resumed from the mid-run checkpoint (state, source and target iterator positions;
    # lambda follows the step) ends where the uninterrupted one did.
    shutil.copytree(os.path.join(full, "checkpoints", "3"),
                    os.path.join(resumed, "checkpoints", "3"))
    again = train.run(config, resumed)
    assert again["steps"] == 6
    got = checkpoint.load_state(os.path.join(resumed, "checkpoints", "6"))
    for a, b in zip(jax.tree.leaves(final["params"]), jax.tree.leaves(got["params"]),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert again["final_eval_target"] == pytest.approx(summary["final_eval_target"])
