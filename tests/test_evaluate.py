"""Offline evaluation, calibration storage, prediction, ensembles, TTA and the HTML report, on
one tiny digits run trained once for the module."""

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, run_python, tiny_config
from PIL import Image

from jaxcls import calibration, checkpoint, evaluate, predict, train
from jaxcls.data import augment, sources, tta


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 20-step digits run with a 10% validation slice, evaluated (best checkpoint)."""
    workdir = str(tmp_path_factory.mktemp("eval") / "run")
    config = tiny_config(num_steps=20, eval_every_steps=10, val_fraction=0.1)
    summary = train.run(config, workdir)
    result = evaluate.evaluate([workdir])
    return workdir, config, summary, result


def _npz(workdir, name="test"):
    return np.load(os.path.join(workdir, "eval", name, "predictions.npz"))


def test_offline_metrics_match_the_training_eval(run):
    workdir, config, summary, result = run
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        evals = {r["step"]: r for r in map(json.loads, f) if r["split"] == "eval"}
    best = evals[summary["best_step"]]
    assert result["checkpoints"] == [os.path.join(workdir, "checkpoints",
                                                  str(summary["best_step"]))]
    assert result["accuracy"] == pytest.approx(best["accuracy"], abs=1e-6)
    assert result["top5"] == pytest.approx(best["top5"], abs=1e-6)
    assert result["log_loss"] == pytest.approx(best["loss"], rel=1e-5)
    dataset = sources.create(config)
    preds = _npz(workdir)
    np.testing.assert_array_equal(preds["labels"], dataset.eval.labels)
    assert preds["probs"].shape == (len(dataset.eval), 10)
    np.testing.assert_allclose(preds["probs"].sum(axis=1), 1.0, atol=1e-5)
    assert list(preds["class_names"]) == dataset.class_names
    with open(os.path.join(workdir, "eval", "test", "metrics.json")) as f:
        assert json.load(f)["accuracy"] == result["accuracy"]


def test_val_split_is_held_out_stratified_and_fixed():
    config = tiny_config(val_fraction=0.1)
    a, b = sources.create(config), sources.create(config)
    np.testing.assert_array_equal(a.val.images, b.val.images)
    full = sources.create(tiny_config())
    assert len(a.train) + len(a.val) == len(full.train)
    counts = np.bincount(a.val.labels, minlength=10)
    expected = 0.1 * np.bincount(full.train.labels, minlength=10)
    assert np.all(np.abs(counts - expected) <= 1), counts
    # Disjoint and complete: images that carry their own index.
    marked = sources.ArraySource(np.arange(200, dtype=np.uint8)[:, None, None, None]
                                 * np.ones((1, 2, 2, 3), np.uint8), np.arange(200) % 4)
    rest, held = sources.split_off(marked, 0.25, seed=0)
    ids = lambda s: set(s.images[:, 0, 0, 0].tolist())  # noqa: E731
    assert ids(rest) | ids(held) == set(range(200)) and not ids(rest) & ids(held)
    assert len(held) == 50
    with pytest.raises(ValueError, match="val_fraction"):
        train.validate(tiny_config(val_fraction=1.5))


def test_temperature_fitted_on_val_is_stored_and_orbax_still_resumes(run, tmp_path):
    workdir, config, summary, result = run
    cal = result["calibration"]
    assert cal["fitted_on"] == "val" and cal["leakage"] is None
    step_dir = result["checkpoints"][0]
    assert calibration.temperature(step_dir) == pytest.approx(cal["temperature"])
    # The same temperature from the val predictions directly.
    run_ = evaluate.load_run(workdir)
    val = evaluate.predict_source(run_, sources.create(config).val)
    assert calibration.fit_temperature(val["log_probs"], val["labels"]) == pytest.approx(
        cal["temperature"], rel=1e-6)
    # orbax resumes training from a step directory holding calibration.json.
    copy = str(tmp_path / "resumed")
    shutil.copytree(workdir, copy)
    for step in (10, 20):
        calibration.save(os.path.join(copy, "checkpoints", str(step)), "", {"temperature": 2.0})
    resumed = train.run(tiny_config(num_steps=22, eval_every_steps=10, val_fraction=0.1), copy)
    assert resumed["steps"] == 22
    assert checkpoint.load_state(os.path.join(copy, "checkpoints", "22"))["step"] == 22


def test_loading_a_checkpoint_logs_no_orbax_metadata_warning(run, caplog):
    with caplog.at_level("WARNING", logger="absl"):
        state = checkpoint.load_state(os.path.join(run[0], "checkpoints", "20"))
    assert state["step"] == 20
    assert not [r for r in caplog.records if "Metadata file" in r.getMessage()]


def test_checkpoint_choice(run):
    workdir, _, summary, _ = run
    ckpts = os.path.join(workdir, "checkpoints")
    assert evaluate.resolve_checkpoint(workdir, "last") == os.path.join(ckpts, "20")
    assert evaluate.resolve_checkpoint(workdir, "10") == os.path.join(ckpts, "10")
    assert evaluate.resolve_checkpoint(workdir) == os.path.join(ckpts, str(summary["best_step"]))
    with pytest.raises(FileNotFoundError, match="saved steps"):
        evaluate.resolve_checkpoint(workdir, "7")
    with pytest.raises(ValueError, match="best, last"):
        evaluate.resolve_checkpoint(workdir, "latest")


def test_tta_views():
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))
    assert tta.tta_views(images, "").shape == (1, 3, 8, 8, 3)
    flip = np.asarray(tta.tta_views(images, "flip"))
    np.testing.assert_array_equal(flip[0], images)
    np.testing.assert_array_equal(flip[1], np.asarray(images)[:, :, ::-1])
    crops = np.asarray(tta.tta_views(images, "crops5(1.5)"))  # 8 -> 12: crops at 0, 2, 4
    up = np.asarray(jnp.clip(jnp.round(jax.image.resize(images.astype(jnp.float32),
                                                        (3, 12, 12, 3), "bilinear")), 0, 255))
    for view, (y, x) in zip(crops, [(2, 2), (0, 0), (0, 4), (4, 0), (4, 4)], strict=True):
        np.testing.assert_array_equal(view, up[:, y:y + 8, x:x + 8])
    both = np.asarray(tta.tta_views(images, "flip|crops5", crop_frac=0.875))
    assert both.shape == (10, 3, 8, 8, 3)
    np.testing.assert_array_equal(both[:5], tta.tta_views(images, "crops5", crop_frac=0.875))
    np.testing.assert_array_equal(both[5:], tta.tta_views(images[:, :, ::-1], "crops5",
                                                          crop_frac=0.875))  # of the mirror
    with pytest.raises(ValueError, match="rotate"):
        tta.parse("flip|rotate")
    # Without a crop to undo (crop_frac 1.0, the CIFAR recipes) crops5 enlarges by 1.125.
    assert tta.parse("flip|crops5", crop_frac=1.0) == [("flip", 1.0), ("crops5", 1.125)]
    assert tta.parse("crops5", crop_frac=0.8) == [("crops5", 1.25)]
    with pytest.raises(ValueError, match=r"'crops5\(0.9\)': crops need an upscale R > 1"):
        tta.parse("crops5(0.9)")


def test_each_tta_setting_has_its_own_folder(run):
    workdir = run[0]
    assert evaluate.output_dir([workdir], "test", "") == os.path.join(workdir, "eval", "test")
    assert evaluate.output_dir([workdir, "b"], "val", "flip | crops5(1.15)") == os.path.join(
        workdir, "eval", "val_tta_flip+crops5-1.15_ensemble")
    # The README's example on a run with crop_frac 1.0, beside a plain flip: two folders.
    for spec in ("flip|crops5", "flip"):
        evaluate.evaluate([workdir], tta_spec=spec, pictures=False)
    for name, views in (("test_tta_flip+crops5", "flip|crops5"), ("test_tta_flip", "flip")):
        with open(os.path.join(workdir, "eval", name, "metrics.json")) as f:
            assert json.load(f)["tta"] == views


def test_tta_averages_the_views_probabilities(run):
    workdir, config, _, _ = run
    run_ = evaluate.load_run(workdir)
    images = sources.create(config).eval.images[:16]
    got = np.exp(np.asarray(run_.predict_fn("flip")(run_.variables, images)))

    def probs(x):
        x = augment.normalize(x, config.mean, config.std)
        return jax.nn.softmax(run_.model.apply(run_.variables, x, train=False))

    expected = (probs(images) + probs(images[:, :, ::-1])) / 2
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_ensemble_averages_probabilities_and_needs_the_same_classes(run, tmp_path):
    a = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    b = np.log(np.array([[0.1, 0.9], [0.7, 0.3]]))
    np.testing.assert_allclose(np.exp(evaluate.ensemble([a, b])), [[0.3, 0.7], [0.8, 0.2]])
    workdir = run[0]
    other = str(tmp_path / "other")
    shutil.copytree(workdir, other, ignore=shutil.ignore_patterns("eval"))
    with open(os.path.join(other, "class_names.json"), "w") as f:
        json.dump([f"digit {i}" for i in range(10)], f)
    with pytest.raises(ValueError, match="same classes"):
        evaluate.evaluate([workdir, other])


def test_ensemble_of_different_test_sets_fails_before_predicting(run, tmp_path, monkeypatch):
    workdir = run[0]
    other = str(tmp_path / "other")
    shutil.copytree(workdir, other, ignore=shutil.ignore_patterns("eval"))
    with open(os.path.join(other, "config.json")) as f:
        config = json.load(f)
    config["holdout_fraction"] = 0.3  # another digits test split
    with open(os.path.join(other, "config.json"), "w") as f:
        json.dump(config, f)

    def no_prediction(*args, **kwargs):
        raise AssertionError("predicted before checking the ensemble's examples")

    monkeypatch.setattr(evaluate, "predict_source", no_prediction)
    with pytest.raises(ValueError, match=r"do not have the same test examples \(\d+ and \d+ "
                                         r"examples\): an ensemble must evaluate one dataset"):
        evaluate.evaluate([workdir, other])


def _write_images(folder, config, n=4):
    """n eval images as PNGs (lossless: the model sees the same pixels), a text file and a
    truncated JPEG."""
    os.makedirs(folder)
    images = sources.create(config).eval.images[:n]
    for i, image in enumerate(images):
        Image.fromarray(image).save(os.path.join(folder, f"img{i}.png"))
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("not an image")
    with open(os.path.join(folder, "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0garbage")
    return images


def test_predict_cli_uses_the_stored_temperature(run, tmp_path):
    workdir, config, _, result = run
    folder = str(tmp_path / "images")
    _write_images(folder, config)
    proc = subprocess.run([sys.executable, "-m", "jaxcls.predict", f"--workdir={workdir}",
                           "--top_k=3", "--json", folder], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [os.path.basename(r["path"]) for r in rows] == [f"img{i}.png" for i in range(4)]
    assert "broken.jpg: not a readable image" in proc.stderr
    assert "notes.txt: not a readable image" in proc.stderr
    # Same numbers as evaluate's predictions of those examples, scaled by the temperature.
    probs = _npz(workdir)["probs"][:4]
    calibrated = np.exp(calibration.scaled_log_probs(np.log(probs),
                                                     result["calibration"]["temperature"]))
    names = list(_npz(workdir)["class_names"])
    for r, p in zip(rows, calibrated, strict=True):
        top = np.argsort(-p, kind="stable")[:3]
        assert [t["label"] for t in r["top_k"]] == [names[j] for j in top]
        np.testing.assert_allclose([t["probability"] for t in r["top_k"]], p[top], atol=1e-5)


def test_predict_reports_when_nothing_is_an_image(run, tmp_path):
    path = str(tmp_path / "a.txt")
    with open(path, "w") as f:
        f.write("text")
    results = list(predict.predict([run[0]], [path], progress=False))
    assert len(results) == 1 and "error" in results[0]


def test_eight_devices_give_the_same_predictions(run, tmp_path):
    workdir = run[0]
    out = str(tmp_path / "sharded")
    proc = run_python(f"from jaxcls import evaluate; import jax; assert jax.device_count() == 8;"
                      f"evaluate.evaluate([{workdir!r}], out_dir={out!r}, pictures=False)",
                      devices=8)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    sharded = np.load(os.path.join(out, "predictions.npz"))
    single = _npz(workdir)
    np.testing.assert_array_equal(sharded["labels"], single["labels"])
    np.testing.assert_allclose(sharded["probs"], single["probs"], atol=2e-6)


def test_report_is_one_self_contained_file(run):
    report = os.path.join(run[0], "eval", "test", "report.html")
    with open(report, encoding="utf-8") as f:
        page = f.read()
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched from a network
    assert "<script" not in page
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == 6
    for data in pngs:  # every inlined picture decodes
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 100


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_chromium_without_errors(run):
    report = os.path.join(run[0], "eval", "test", "report.html")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--dump-dom", "file://" + report], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CONSOLE" not in proc.stderr and "Uncaught" not in proc.stderr, proc.stderr
    dom = proc.stdout
    assert dom.count("<img") == 6 and dom.count("<h2>") >= 9
    assert "Classification report" in dom and "reliability diagram" in dom


def test_evaluate_ema_uses_the_moving_average(tmp_path):
    workdir = str(tmp_path / "ema")
    config = tiny_config(num_steps=12, ema_decay=0.8)
    train.run(config, workdir)
    state = checkpoint.load_state(evaluate.resolve_checkpoint(workdir, "last"))
    result = evaluate.evaluate([workdir], which="last", ema=True, pictures=False)
    assert result["ema"] is True
    run = evaluate.load_run(workdir, "last")
    source = sources.create(config).eval
    x = augment.normalize(jnp.asarray(source.images), config.mean, config.std)
    probs = {}
    for name in ("params", "ema_params"):
        variables = {"params": state[name], "batch_stats": state["batch_stats"]}
        probs[name] = np.asarray(jax.nn.softmax(run.model.apply(variables, x, train=False)))
    saved = _npz(workdir, "test_ema")["probs"]  # its own folder and temperature key
    np.testing.assert_allclose(saved, probs["ema_params"], atol=1e-5)
    assert np.abs(saved - probs["params"]).max() > 1e-3  # not the raw parameters
    step_dir = evaluate.resolve_checkpoint(workdir, "last")
    assert set(calibration.load_all(step_dir)) == {"+ema"}  # the plain key stays free
    plain = str(tmp_path / "plain")
    train.run(tiny_config(num_steps=2), plain)
    with pytest.raises(ValueError, match="no EMA parameters"):
        evaluate.load_run(plain, "last", ema=True)
