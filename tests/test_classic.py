"""jaxcls.classic against direct scikit-image / scikit-learn computations on real digits."""

import json

import numpy as np
import pytest
from skimage.feature import hog, local_binary_pattern
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from jaxcls.classic import baseline, classifiers, features
from jaxcls.data import sources


def test_hog_logreg_run_equals_a_direct_scikit_learn_pipeline(tmp_path):
    result = baseline.run("digits", "hog", "logreg", str(tmp_path), image_size=32, cv=2,
                          n_jobs=1, pictures=False)
    ds = sources.create(baseline.dataset_config("digits", 32, 0))

    def direct(src):
        return np.stack([hog(im, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
                             block_norm="L2-Hys", channel_axis=-1) for im in src.images]
                        ).astype(np.float32)  # as jaxcls stores them

    c = result["method"]["best_params"]["clf__C"]
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    ref.fit(direct(ds.train), ds.train.labels)
    probs = ref.predict_proba(direct(ds.eval))
    saved = np.load(tmp_path / "eval" / "test" / "predictions.npz")
    np.testing.assert_array_equal(saved["labels"], ds.eval.labels)
    np.testing.assert_allclose(saved["probs"], np.clip(probs, 1e-7, 1) / np.clip(
        probs, 1e-7, 1).sum(1, keepdims=True), atol=1e-5)
    acc = float((probs.argmax(1) == ds.eval.labels).mean())
    on_disk = json.loads((tmp_path / "eval" / "test" / "metrics.json").read_text())
    assert on_disk["accuracy"] == pytest.approx(acc) == pytest.approx(result["accuracy"])
    assert acc > 0.95  # HOG + logistic regression on 8x8 digits upsampled to 32 px
    assert on_disk["method"]["feature_dims"] == 324  # 3x3 blocks x 2x2 cells x 9 bins
    assert (tmp_path / "classifier.joblib").exists()


def test_lbp_and_colour_histograms_match_numpy_references():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    p = features.FeatureParams(lbp_grid=2, color_bins=4)
    hist = features.color_hist(image, p)
    expected = np.concatenate([np.histogram(image[..., c], bins=4, range=(0, 256))[0]
                               for c in range(3)]) / 256
    np.testing.assert_allclose(hist, expected, rtol=1e-6)
    grey = (0.2125 * image[..., 0] + 0.7154 * image[..., 1] + 0.0721 * image[..., 2]) / 255
    codes = local_binary_pattern((grey * 255).astype(np.uint8), 8, 1, "uniform")
    cells = [codes[:8, :8], codes[:8, 8:], codes[8:, :8], codes[8:, 8:]]
    expected = np.concatenate([np.histogram(c, bins=10, range=(0, 10))[0] / 64 for c in cells])
    np.testing.assert_allclose(features.lbp(image, p), expected, rtol=1e-6)
    np.testing.assert_array_equal(features.extract("pixels", image[None], p, n_jobs=1)[0],
                                  image.ravel() / np.float32(255))


def test_svm_scores_become_log_probabilities_in_dataset_class_order():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = np.where(x[:, 0] > 0, 3, 1)  # two of four classes present, labels not 0..k-1
    pipe = make_pipeline(StandardScaler(), LinearSVC()).fit(x, y)
    lp = classifiers.log_probs(pipe, x, 4)
    np.testing.assert_allclose(np.exp(lp).sum(1), 1, rtol=1e-6)
    np.testing.assert_array_equal(lp.argmax(1), pipe.predict(x))
    assert (lp[:, [0, 2]] < -10).all()  # classes never seen in training get ~0 probability


def test_rbf_svm_switches_to_nystroem_above_the_exact_limit():
    exact, _ = classifiers.build("rbf_svm", 500, exact_svm_max=1000)
    approx, _ = classifiers.build("rbf_svm", 5000, exact_svm_max=1000, nystroem_components=300)
    assert type(exact[-1]).__name__ == "SVC"
    assert [n for n, _ in approx.steps] == ["scale", "kernel", "clf"]
    assert approx.named_steps["kernel"].n_components == 300
    with pytest.raises(ValueError, match="--classifier='svm'"):
        classifiers.build("svm", 10)
    with pytest.raises(ValueError, match="--features='sift'"):
        features.extract("sift", np.zeros((1, 8, 8, 3), np.uint8))
