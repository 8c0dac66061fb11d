"""Problem variants: multi-label (BCE, mAP, per-label F1 and thresholds), imbalance (class
weights, focal loss, a class-balanced sampler), early stopping and the plateau schedule."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.utils.class_weight import compute_class_weight

from jaxcls import evaluate, losses, metrics, monitor, optim, thresholds, train
from jaxcls.data import loader, sources
from tests.conftest import tiny_config


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("gamma,alpha", [(0.0, -1.0), (2.0, -1.0), (1.5, 0.25)])
def test_sigmoid_focal_and_bce_match_reference_formulas(gamma, alpha):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (16, 5)).astype(np.float32)
    targets = (rng.random((16, 5)) < 0.3).astype(np.float32)
    p = _sigmoid(logits.astype(np.float64))
    p_t = np.where(targets == 1, p, 1 - p)
    alpha_t = np.where(targets == 1, alpha, 1 - alpha) if alpha >= 0 else 1.0
    expected = -alpha_t * (1 - p_t) ** gamma * np.log(p_t)
    got = np.asarray(losses.sigmoid_focal_terms(jnp.asarray(logits), jnp.asarray(targets),
                                                gamma, alpha))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    if gamma == 0 and alpha < 0:  # binary cross-entropy, as PyTorch computes it
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            torch.tensor(logits), torch.tensor(targets), reduction="none").numpy()
        np.testing.assert_allclose(got, bce, rtol=1e-5, atol=1e-6)
        # multilabel cross_entropy: the mean over labels, weighted per label
        weights = rng.random(5).astype(np.float32)
        config = tiny_config(task="multilabel", class_weights=",".join(map(str, weights)))
        per_example = losses.make_loss(config)(jnp.asarray(logits), jnp.asarray(targets))
        np.testing.assert_allclose(per_example, (bce * weights).mean(-1), rtol=1e-5)


def test_softmax_focal_matches_reference_and_is_cross_entropy_at_gamma_0():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (32, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 32)
    log_p = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), -1).numpy()
    log_p_y = log_p[np.arange(32), labels]
    expected = -(1 - np.exp(log_p_y)) ** 2.0 * log_p_y
    focal = losses.softmax_focal_loss(jnp.asarray(logits), jnp.asarray(labels), 2.0)
    np.testing.assert_allclose(focal, expected, rtol=1e-5, atol=1e-6)
    for eps in (0.0, 0.1):
        np.testing.assert_allclose(
            losses.softmax_focal_loss(jnp.asarray(logits), jnp.asarray(labels), 0.0, eps),
            losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), eps),
            rtol=1e-5)
    # class weights: PyTorch's weighted cross-entropy per example (reduction="none")
    weights = rng.random(6).astype(np.float32)
    config = tiny_config(class_weights=",".join(map(str, weights)))
    reference = torch.nn.functional.cross_entropy(
        torch.tensor(logits), torch.tensor(labels), weight=torch.tensor(weights),
        reduction="none").numpy()
    np.testing.assert_allclose(losses.make_loss(config)(jnp.asarray(logits), jnp.asarray(labels)),
                               reference, rtol=1e-5)


def test_balanced_class_weights_match_scikit_learn():
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    np.testing.assert_allclose(losses.balanced_class_weights(labels, 4),
                               compute_class_weight("balanced", classes=np.arange(4), y=labels),
                               rtol=1e-6)
    multi_hot = np.eye(4)[labels]  # one label each: the same counts
    np.testing.assert_allclose(losses.balanced_class_weights(multi_hot, 4),
                               losses.balanced_class_weights(labels, 4))


def _multilabel_scores(seed=0, n=200, c=6):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < 0.3).astype(np.float32)
    labels[:, -1] = 0  # a label without positives
    scores = np.clip(labels * 0.3 + rng.random((n, c)) * 0.7, 0, 1)
    return np.round(scores, 1), labels  # rounding makes many ties


def test_average_precision_and_f1_match_scikit_learn():
    scores, labels = _multilabel_scores()
    ap = metrics.average_precision(scores, labels)
    assert np.isnan(ap[-1])
    for c in range(labels.shape[1] - 1):
        assert ap[c] == pytest.approx(skm.average_precision_score(labels[:, c], scores[:, c]),
                                      abs=1e-12)
    for t in (0.5, np.linspace(0.2, 0.8, 6)):
        np.testing.assert_allclose(
            metrics.f1_per_label(scores, labels, t),
            skm.f1_score(labels, scores >= t, average=None, zero_division=0), atol=1e-12)
    # fitted thresholds reach the best F1 over every candidate threshold, per label
    fitted = metrics.fit_thresholds(scores, labels)
    best = [max(skm.f1_score(labels[:, c], scores[:, c] >= t, zero_division=0)
                for t in np.unique(scores[:, c])) for c in range(labels.shape[1] - 1)]
    np.testing.assert_allclose(metrics.f1_per_label(scores, labels, fitted)[:-1], best,
                               atol=1e-12)
    assert fitted[-1] == 0.5


def test_multilabel_collection_matches_scikit_learn_with_padding():
    scores, labels = _multilabel_scores(seed=1, n=96)
    logits = np.log(np.clip(scores, 1e-3, 1 - 1e-3) / np.clip(1 - scores, 1e-3, 1))
    mask = np.ones(96, np.float32)
    mask[-10:] = 0  # eval padding must not count
    gather = jax.jit(lambda *a: metrics.gather_multilabel(*a, collect=True))
    collected = None
    for i in range(0, 96, 32):  # three eval batches merged on the host, as train.run does
        m = gather(jnp.zeros(32), jnp.asarray(logits[i:i + 32]), jnp.asarray(labels[i:i + 32]),
                   jnp.asarray(mask[i:i + 32]))
        collected = m if collected is None else collected.merge(m)
    values = metrics.to_host(collected)
    keep = slice(0, 86)
    predicted = _sigmoid(logits[keep]) >= 0.5
    assert values["accuracy"] == pytest.approx(1 - skm.hamming_loss(labels[keep], predicted))
    assert values["exact_match"] == pytest.approx(skm.accuracy_score(labels[keep], predicted))
    sk_ap = [skm.average_precision_score(labels[keep, c], _sigmoid(logits[keep, c]))
             for c in range(5) if labels[keep, c].any()]
    assert values["mAP"] == pytest.approx(np.mean(sk_ap), abs=1e-6)


def test_tfds_multilabel_labels_are_multi_hot():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        ds = sources.tfds_dataset("voc", None, 8, 1.0, "train", "test", "image", "labels",
                                  multilabel=True)
        builder = tfds.builder("voc")
        record = ds.train.source[0]
        ex = ds.train[0]
    assert ds.class_names == builder.info.features["labels"].feature.names
    assert ex["label"].shape == (20,) and ex["label"].dtype == np.float32
    assert set(np.flatnonzero(ex["label"])) == set(np.asarray(record["labels"]).tolist())
    assert ex["image"].shape == (8, 8, 3)


def _digits_multilabel_folder(root) -> None:
    """Digits as PNG files with two labels each: odd, big (> 4). Train in the 'path,labels'
    format, test in the one-column-per-class format."""
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    for split, idx in (("train", np.arange(0, 1500)), ("test", np.arange(1500, 1797))):
        os.makedirs(root / split)
        rows = []
        for i in idx:
            Image.fromarray(pixels[i]).save(root / split / f"{i}.png")
            odd, big = data.target[i] % 2, data.target[i] > 4
            rows.append((f"{i}.png", odd, big))
        with open(root / split / "labels.csv", "w") as f:
            if split == "train":
                f.write("path,labels\n")
                f.writelines(f"{p},{';'.join(n for n, y in (('odd', o), ('big', b)) if y)}\n"
                             for p, o, b in rows)
            else:
                f.write("path,big,odd\n")  # sorted class names, as train's list gives them
                f.writelines(f"{p},{int(b)},{int(o)}\n" for p, o, b in rows)


@pytest.mark.slow  # (CI budget) a real training run
def test_multilabel_folder_training_learns(tmp_path):
    _digits_multilabel_folder(tmp_path / "data")
    config = tiny_config(task="multilabel", dataset=f"folder:{tmp_path / 'data'}",
                         num_steps=120, log_every_steps=40, val_fraction=0.2,
                         class_weights="balanced", eval_every_steps=40, keep_checkpoints=1,
                         early_stopping_metric="mAP", early_stopping_patience=10)
    workdir = str(tmp_path / "run")
    summary = train.run(config, workdir)
    evals = [r for line in open(os.path.join(workdir, "metrics.jsonl"))
             if (r := json.loads(line))["split"] == "eval"]
    assert {"loss", "accuracy", "exact_match", "mAP"} <= set(evals[-1])
    # Per label the majority guess is right 50-55% of the time, random scores give an AP of
    # about the positive rate (~0.5) and an exact match of ~0.25; these labels need the digit.
    # (Measured 2026-11-24: accuracy 0.872, mAP 0.956, exact match 0.754.)
    assert evals[-1]["accuracy"] > 0.8 and evals[-1]["mAP"] > 0.9
    assert evals[-1]["exact_match"] > 0.6
    resolved = json.load(open(os.path.join(workdir, "config.json")))["class_weights"]
    labels = sources.create(config).train.labels
    np.testing.assert_allclose([float(w) for w in resolved.split(",")],
                               losses.balanced_class_weights(labels, 2), rtol=1e-5)
    # Thresholds fitted on the val hold-out (300 of train's 1,500), F1 at them on the test split.
    saved = json.load(open(os.path.join(workdir, "checkpoints", "120", thresholds.FILENAME)))
    assert saved["class_names"] == ["big", "odd"] and saved["fitted_on"] == "val"
    assert saved["fit_examples"] == 300 and saved["eval"]["examples"] == 297
    assert not saved["eval"]["in_sample"] and min(saved["eval"]["f1_at_thresholds"]) > 0.75
    # `best` follows the monitored metric (mAP), survives keep_checkpoints=1 and has its own
    # thresholds, so evaluate/predict's default checkpoint carries them.
    best = max(evals, key=lambda r: (r["mAP"], -r["step"]))
    assert (summary["best_metric"], summary["best_value"], summary["best_step"]) == (
        "mAP", best["mAP"], best["step"])
    assert summary["best_accuracy"] == best["accuracy"]
    step_dir = evaluate.resolve_checkpoint(workdir, "best")
    assert step_dir == os.path.join(workdir, "checkpoints", str(best["step"]))
    with open(os.path.join(step_dir, thresholds.FILENAME)) as f:
        assert json.load(f)["class_names"] == ["big", "odd"]


def test_best_eval_follows_the_monitored_metric():
    rows = [{"step": 1, "accuracy": 0.9, "loss": 0.5, "mAP": 0.7},
            {"step": 2, "accuracy": 0.8, "loss": 0.3, "mAP": 0.9},
            {"step": 3, "accuracy": 0.9, "loss": 0.3, "mAP": 0.9}]
    assert train.best_eval(rows) == (0.9, 1)  # ties: the earliest
    assert train.best_eval(rows, "mAP") == (0.9, 2)
    assert train.best_eval(rows, "loss") == (0.3, 2)  # loss: the lowest
    assert train.best_metric(tiny_config(early_stopping_metric="loss")) == "loss"
    assert train.best_metric(tiny_config()) == "accuracy"


def _iterator(source, seed, balanced=True):
    return loader.train_iterator(source, 100, seed, num_threads=1, class_balanced=balanced)


def test_class_balanced_sampler_is_uniform_over_classes_and_resumes():
    labels = np.repeat(np.arange(3), [900, 90, 10])  # 90% / 9% / 1%
    source = sources.ArraySource(np.zeros((1000, 1, 1, 3), np.uint8), labels)
    it = _iterator(source, seed=0)
    drawn = np.concatenate([next(it)["index"] for _ in range(30)])
    counts = np.bincount(labels[drawn], minlength=3)
    # 3,000 draws, p = 1/3 each: std 25.8; 5 std either side.
    assert np.all(np.abs(counts - 1000) < 130), counts
    assert len(np.unique(drawn[labels[drawn] == 2])) == 10  # every rare example shows up
    # Resuming from a saved position replays the same batches; another seed draws others.
    state = it.get_state()
    after = [next(it)["index"] for _ in range(3)]
    resumed = _iterator(source, seed=0)
    resumed.set_state(state)
    for a in after:
        np.testing.assert_array_equal(next(resumed)["index"], a)
    assert not np.array_equal(next(_iterator(source, seed=1))["index"], drawn[:100])
    np.testing.assert_array_equal(next(_iterator(source, seed=0))["index"], drawn[:100])


def test_early_stopping_stops_at_the_right_eval():
    losses_seen = [1.0, 0.8, 0.81, 0.79, 0.80, 0.85, 0.70]
    stops = [i for i in range(len(losses_seen))
             if monitor.evals_since_best(losses_seen[:i + 1], False, 0.005) >= 2]
    assert stops[0] == 5  # 0.79 beat 0.8 by more than 0.005; 0.80 and 0.85 did not
    accuracy = [0.5, 0.6, 0.6, 0.61, 0.605]
    assert [monitor.evals_since_best(accuracy[:i + 1], True, 0.02) for i in range(5)] == \
        [0, 0, 1, 2, 3]
    assert monitor.higher_is_better("mAP") and not monitor.higher_is_better("loss")


@pytest.mark.parametrize("patience,factor,min_delta,min_lr", [(1, 0.5, 0.0, 0.0),
                                                               (2, 0.5, 0.01, 0.0),
                                                               (3, 0.1, 0.0, 1e-3)])
def test_plateau_scale_matches_pytorch_reduce_lr_on_plateau(patience, factor, min_delta, min_lr):
    rng = np.random.default_rng(patience)
    values = 1.0 / np.arange(1, 41) + rng.normal(0, 0.02, 40)  # improving, then noise
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    # PyTorch cuts when the bad count exceeds its patience; ours when it reaches it.
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=factor, patience=patience - 1, threshold=min_delta,
        threshold_mode="abs", min_lr=min_lr, eps=0.0)
    for i, v in enumerate(values):
        sched.step(float(v))
        ours = monitor.plateau_scale(values[:i + 1], False, patience, factor, min_delta, min_lr)
        assert ours == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), i


def test_plateau_scale_in_the_optimizer_state_scales_the_update():
    config = tiny_config(schedule="plateau", optimizer="sgd", momentum=0.0, weight_decay=0.0)
    params = {"w": jnp.ones((3, 2))}
    tx = optim.create_optimizer(config, optim.create_schedule(config, 10, 100), params, 10)
    grads = {"w": jnp.full((3, 2), 2.0)}
    state = tx.init(params)
    assert optim.plateau_scale(state) == 1.0
    full, _ = tx.update(grads, state, params)
    halved = optim.set_plateau_scale(state, 0.5)
    assert optim.plateau_scale(halved) == 0.5
    half, _ = tx.update(grads, halved, params)
    np.testing.assert_allclose(half["w"], 0.5 * full["w"])
    np.testing.assert_allclose(full["w"], -config.learning_rate * grads["w"])


@pytest.mark.slow  # (CI budget) three runs
def test_plateau_and_early_stopping_in_a_run_survive_resume(workdir):
    # min_delta 1e9: only the first eval counts as an improvement, so the script is known:
    # evals at 2 (best), 4 (x0.5), 6 (x0.25), 8 (x0.125, third eval without gain: stop).
    keys = dict(schedule="plateau", plateau_patience=1, plateau_factor=0.5,
                plateau_min_delta=1e9, early_stopping_metric="loss", early_stopping_patience=3,
                early_stopping_min_delta=1e9, eval_every_steps=2)
    train.run(tiny_config(num_steps=4, **keys), workdir)
    summary = train.run(tiny_config(num_steps=12, **keys), workdir)  # resumes at step 4
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    lr = {r["step"]: r["learning_rate"] for r in rows if r["split"] == "train"}
    base = tiny_config().learning_rate
    assert [lr[s] / base for s in range(1, 9)] == pytest.approx(
        [1, 1, 1, 1, 0.5, 0.5, 0.25, 0.25])
    assert [r["step"] for r in rows if r["split"] == "eval"] == [2, 4, 6, 8]
    assert summary["steps"] == 8 and summary["stopped_by"] == "early_stopping"
    assert "3 evaluations" in summary["stop_reason"] and "step 2" in summary["stop_reason"]
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "8"))
    again = train.run(tiny_config(num_steps=12, **keys), workdir)  # stays stopped
    assert again["steps"] == 8 and again["stopped_by"] == "early_stopping"


@pytest.mark.parametrize("overrides,message", [
    (dict(task="binary"), "config.task"),
    (dict(loss="hinge"), "config.loss"),
    (dict(class_weights="1,x"), "config.class_weights"),
    (dict(loss="focal", focal_alpha=0.25), "config.focal_alpha"),
    (dict(early_stopping_metric="mAP", eval_every_steps=5), "config.early_stopping_metric"),
    (dict(early_stopping_metric="loss"), "eval_every"),
    (dict(schedule="plateau", plateau_factor=1.5, eval_every_steps=5), "config.plateau_factor"),
    (dict(task="multilabel", class_balanced_sampler=True), "class_balanced_sampler"),
])
def test_bad_variant_keys_fail_at_start_naming_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        train.validate(tiny_config(**overrides))
