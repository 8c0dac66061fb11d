"""jaxcls.shift: prior estimates against known label shifts, Mahalanobis against scikit-learn,
the MMD test's calibration, and the command end to end on a real (tiny, digits) run."""

import json
import os

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image
from scipy.stats import norm
from sklearn.covariance import EmpiricalCovariance

from jaxcls import train
from jaxcls.data import sources
from jaxcls.shift import detect, mmd, priors, scores


def test_bbse_and_em_recover_skewed_priors():
    rng = np.random.default_rng(0)
    mus, source_p, target_p = np.array([-2.0, 0.0, 2.0]), np.full(3, 1 / 3), np.array(
        [0.6, 0.3, 0.1])

    def draw(p, n):
        y = rng.choice(3, n, p=p)
        x = rng.normal(mus[y], 1.0)
        lik = norm.pdf(x[:, None], mus[None], 1.0) * source_p  # the Bayes posterior, source
        return y, lik / lik.sum(1, keepdims=True)

    ys, ps = draw(source_p, 20000)
    yt, pt = draw(target_p, 20000)
    bbse = priors.bbse(ys, ps.argmax(1), pt.argmax(1), 3)
    em, post = priors.em(pt, source_p)
    np.testing.assert_allclose(bbse, target_p, atol=0.02)
    np.testing.assert_allclose(em, target_p, atol=0.02)
    np.testing.assert_allclose(post.mean(0), em, atol=1e-6)  # EM's fixed point
    # The corrected posteriors are better calibrated for the target: lower log loss.
    assert -np.log(post[np.arange(len(yt)), yt]).mean() < -np.log(pt[np.arange(len(yt)),
                                                                      yt]).mean()


def test_mahalanobis_equals_scikit_learn_with_a_shared_covariance():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + labels[:, None]
    m = scores.Mahalanobis(x, labels, ridge=0.0)
    means = np.stack([x[labels == c].mean(0) for c in range(3)])
    cov = EmpiricalCovariance().fit(x - means[labels])
    query = rng.normal(size=(20, 5))
    expected = np.min([cov.mahalanobis(query - means[c]) for c in range(3)], axis=0)
    np.testing.assert_allclose(m(query), expected, rtol=1e-8)


def test_mmd_p_value_is_large_without_shift_and_tiny_with_one():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(200, 4))
    assert mmd.test(a, b, permutations=100)["p_value"] > 0.05
    assert mmd.test(a, b + 0.5, permutations=100)["p_value"] < 0.02
    # The unbiased estimator, written out.
    x, y = a[:5], b[:6]
    k = lambda u, v: np.exp(-np.sum((u - v) ** 2) / 2.0)  # noqa: E731
    exx = np.mean([k(x[i], x[j]) for i in range(5) for j in range(5) if i != j])
    eyy = np.mean([k(y[i], y[j]) for i in range(6) for j in range(6) if i != j])
    exy = np.mean([k(u, v) for u in x for v in y])
    pooled = np.concatenate([x, y])
    kmat = np.exp(-((pooled[:, None] - pooled[None]) ** 2).sum(-1) / 2.0)
    assert mmd.mmd2(kmat, 5) == pytest.approx(exx + eyy - 2 * exy)


def _write(folder, images):
    os.makedirs(folder, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(os.path.join(folder, f"{i:04d}.png"))
    return str(folder)


@pytest.mark.slow  # (CI budget) a training run and two analyses
def test_shift_command_on_a_digits_run(tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(num_steps=80, model_kwargs={"width": 16, "stage_sizes": (1, 1)})
    train.run(config, workdir)
    ds = sources.create(config)
    images, labels = ds.eval.images, np.asarray(ds.eval.labels)
    rng = np.random.default_rng(0)
    skewed = rng.choice(np.flatnonzero(labels < 3), 200)  # only classes 0, 1, 2
    shifted = _write(tmp_path / "skewed", images[skewed])
    inverted = _write(tmp_path / "inverted", 255 - images[:200])
    r_skew = detect.run_shift(workdir, [shifted], str(tmp_path / "o1"), "last", permutations=50)
    r_inv = detect.run_shift(workdir, [inverted], str(tmp_path / "o2"), "last", permutations=50)
    true = np.bincount(labels[skewed], minlength=10) / len(skewed)
    for key in ("bbse", "em"):
        est = np.array(r_skew["priors"][key])
        assert est[:3].sum() > 0.8, key  # the mass moves to the classes actually present
        assert np.abs(est - true).sum() < np.abs(np.array(r_skew["priors"]["source"])
                                                - true).sum() / 2, key
    # Inverted digits are out of distribution: the feature-space score flags most of them and
    # far more than the in-distribution (only label-shifted) target, and the MMD test rejects.
    # (A tiny network's softmax stays confident on them, so MSP and energy are weak here.)
    maha = {k: r["scores"]["mahalanobis"]["flagged_target"] for k, r in (("inv", r_inv),
                                                                       ("skew", r_skew))}
    assert maha["inv"] > 0.5 and maha["inv"] > 3 * maha["skew"], maha
    assert r_inv["mmd"]["p_value"] < 0.05
    assert r_inv["mmd"]["mmd2"] > r_skew["mmd"]["mmd2"]
    on_disk = json.load(open(tmp_path / "o2" / "metrics.json"))
    assert on_disk["target_images"] == 200
    assert (tmp_path / "o2" / "report.html").exists()
