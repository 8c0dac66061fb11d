"""Sweeps: grids expand as written, bad keys fail before any run, settings run in their own
directories (finished ones skipped, a killed one resumed), SLURM array scripts run setting i,
and summaries give the right mean and std over seeds."""

import csv
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxcls import defaults, sweep, train
from tests.conftest import ROOT, tiny_config


def test_product_and_zipped_expand_grids():
    grid = sweep.product(sweep.axis("a", [1, 2]), sweep.axis("b.c", ["x", "y", "z"]))
    assert grid == [{"a": 1, "b.c": "x"}, {"a": 1, "b.c": "y"}, {"a": 1, "b.c": "z"},
                    {"a": 2, "b.c": "x"}, {"a": 2, "b.c": "y"}, {"a": 2, "b.c": "z"}]
    pairs = sweep.zipped(sweep.axis("lr", [0.1, 0.2]), sweep.axis("wd", [1e-4, 5e-4]))
    assert pairs == [{"lr": 0.1, "wd": 1e-4}, {"lr": 0.2, "wd": 5e-4}]
    assert len(sweep.product(pairs, sweep.axis("seed", [0, 1, 2]))) == 6
    with pytest.raises(ValueError, match=r"differ in length: \[2, 3\]"):
        sweep.zipped(sweep.axis("a", [1, 2]), sweep.axis("b", [1, 2, 3]))
    settings = sweep.load_sweep(os.path.join(ROOT, "configs", "sweeps", "cifar10_ls_mixup.py"))
    assert len(settings) == 8 and settings[-1] == {"label_smoothing": 0.1,
                                                   "mixup.mixup_alpha": 0.8, "seed": 1}
    assert sweep.run_name(settings[-1]) == "label_smoothing=0.1,mixup.mixup_alpha=0.8,seed=1"


def test_overrides_set_nested_keys_and_reject_unknown_ones(monkeypatch):
    get_config = defaults.get_config

    def with_nested():  # a nested config with fixed keys, as config.mixup will be
        c = get_config()
        c.mixup = ml_collections.ConfigDict({"mixup_alpha": 0.0})
        return c

    monkeypatch.setattr(defaults, "get_config", with_nested)
    base = with_nested()
    c = sweep.apply(base, {"mixup.mixup_alpha": 0.8, "model_kwargs.width": 4, "seed": 3})
    assert (c.mixup.mixup_alpha, c.model_kwargs.width, c.seed) == (0.8, 4, 3)
    assert base.mixup.mixup_alpha == 0.0 and "width" not in base.model_kwargs  # a copy
    for key, match in (("mixup.mixup_alfa", "unknown config key 'mixup.mixup_alfa'"),
                       ("label_smothing", "unknown config key 'label_smothing'"),
                       ("seed.x", r"unknown config key 'seed.x' \('seed' is not")):
        with pytest.raises(ValueError, match=match):
            sweep.apply(base, {key: 1})
    with pytest.raises(ValueError, match="config key 'seed' cannot take 'one'"):
        sweep.apply(base, {"seed": "one"})


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == "train"]


def test_sweep_runs_each_setting_skips_finished_and_resumes_killed(tmp_path, monkeypatch):
    base = tiny_config(num_steps=4, schedule="constant", final_eval=False)
    settings = [{"label_smoothing": 0.0}, {"label_smoothing": 0.1}]
    resolved = sweep.resolve(base, settings)
    names = [n for n, _ in resolved]
    assert names == ["label_smoothing=0.0", "label_smoothing=0.1"]
    # Setting 1 was killed after a checkpoint at step 2, before writing its summary.
    killed = str(tmp_path / names[1])
    train.run(sweep.apply(base, {**settings[1], "num_steps": 2}), killed)
    os.remove(os.path.join(killed, "summary.json"))
    first_rows = _rows(killed)

    calls = []
    real_run = train.run
    monkeypatch.setattr(train, "run", lambda c, w: calls.append(w) or real_run(c, w))
    assert sweep.run_local(resolved, str(tmp_path), [0, 1]) == []
    assert [os.path.basename(w) for w in calls] == names
    for (name, _), ls in zip(resolved, (0.0, 0.1), strict=True):
        assert json.load(open(tmp_path / name / "config.json"))["label_smoothing"] == ls
        assert [r["step"] for r in _rows(tmp_path / name)] == [1, 2, 3, 4]
    assert _rows(killed)[:2] == first_rows  # resumed at step 2, not restarted
    # Same seed, same data and initialisation: only label smoothing changes the step-1 loss.
    losses = [_rows(tmp_path / n)[0]["loss"] for n in names]
    assert abs(losses[1] - losses[0]) > 1e-4 * losses[0]

    calls.clear()
    assert sweep.run_local(resolved, str(tmp_path), [0, 1]) == []
    assert calls == []  # both finished: skipped without starting
    longer = sweep.resolve(tiny_config(num_steps=5, schedule="constant", final_eval=False),
                           settings[:1])
    assert not sweep.is_finished(str(tmp_path / names[0]), longer[0][1])  # config changed


def _sweep_cli(tmp_path, sweep_text: str, *flags: str):
    (tmp_path / "config.py").write_text(
        "from tests.conftest import tiny_config\n\n\ndef get_config():\n"
        "    return tiny_config(final_eval=False)\n")
    (tmp_path / "sweep.py").write_text(sweep_text)
    env = dict(os.environ, PYTHONPATH=ROOT,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    return subprocess.run(
        [sys.executable, "-m", "jaxcls.sweep", f"--config={tmp_path / 'config.py'}",
         f"--sweep={tmp_path / 'sweep.py'}", f"--workdir={tmp_path / 'runs'}", *flags],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_unknown_key_fails_before_any_run(tmp_path):
    out = _sweep_cli(tmp_path, "def get_sweep():\n"
                     "    return [{'label_smoothing': 0.1}, {'label_smothing': 0.1}]\n")
    assert out.returncode != 0
    assert "sweep setting 1 {'label_smothing': 0.1}: unknown config key 'label_smothing'" in \
        out.stderr
    assert not os.path.exists(tmp_path / "runs")  # setting 0 did not start


def test_slurm_array_task_runs_its_setting(tmp_path):
    out = _sweep_cli(tmp_path, "from jaxcls.sweep import axis\n\n\ndef get_sweep():\n"
                     "    return axis('seed', [0, 1, 2])\n",
                     "--slurm", "--sbatch=--gres=gpu:1", "--sbatch", "--time=01:00:00",
                     "--config.num_steps=2")
    assert out.returncode == 0, out.stderr[-3000:]
    script = (tmp_path / "runs" / "sweep.sbatch").read_text()
    lines = script.splitlines()
    assert "#SBATCH --array=0-2" in lines
    assert "#SBATCH --gres=gpu:1" in lines and "#SBATCH --time=01:00:00" in lines
    command = lines[-1]
    assert command.startswith("exec python -m jaxcls.sweep ")
    assert command.endswith(" --config.num_steps=2 --index=${SLURM_ARRAY_TASK_ID}")
    assert "--slurm" not in command and "gpu:1" not in command
    assert not os.path.exists(tmp_path / "runs" / "seed=1")  # --slurm only writes the script

    # Task 1 of the array, as SLURM would start it.
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", PYTHONPATH=ROOT,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    task = subprocess.run(["bash", str(tmp_path / "runs" / "sweep.sbatch")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert task.returncode == 0, task.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "runs")) == ["seed=1", "sweep.json", "sweep.sbatch"]
    assert [r["step"] for r in _rows(tmp_path / "runs" / "seed=1")] == [1, 2]
    assert json.load(open(tmp_path / "runs" / "seed=1" / "config.json"))["seed"] == 1


def _fake_run(workdir, name, evals):
    os.makedirs(workdir / name)
    with open(workdir / name / "metrics.jsonl", "w") as f:
        for step, accuracy, loss in evals:
            f.write(json.dumps({"step": step, "split": "train", "loss": 9.0,
                                "accuracy": 0.99}) + "\n")  # train rows must not count
            f.write(json.dumps({"step": step, "split": "eval", "loss": loss,
                                "accuracy": accuracy, "top5": 1.0}) + "\n")


def test_summarize_gives_mean_and_std_over_seeds(tmp_path):
    settings = sweep.product(sweep.axis("label_smoothing", [0.0, 0.1]), sweep.axis("seed", [0, 1]))
    names = [sweep.run_name(s) for s in settings]
    sweep.write_plan(str(tmp_path), settings, names)
    _fake_run(tmp_path, names[0], [(10, 0.50, 1.0), (20, 0.70, 0.8), (30, 0.65, 0.9)])
    _fake_run(tmp_path, names[1], [(30, 0.75, 0.7)])
    _fake_run(tmp_path, names[2], [(30, 0.90, 0.3)])  # names[3] never ran

    text = sweep.write_summary(str(tmp_path))
    runs, table = sweep.summarize(str(tmp_path))
    assert [r["final_accuracy"] for r in runs[:3]] == [0.65, 0.75, 0.90]
    assert [r["best_accuracy"] for r in runs[:3]] == [0.70, 0.75, 0.90]
    assert "final_accuracy" not in runs[3]
    a, b = table
    assert (a["label_smoothing"], a["runs"], b["label_smoothing"], b["runs"]) == \
        (0.0, "2/2", 0.1, "1/2")
    # By hand: final 0.65, 0.75 -> mean 0.70, sample std 0.1 / sqrt(2); best 0.70, 0.75;
    # final loss 0.9, 0.7 -> 0.8 +- 0.2 / sqrt(2).
    expected = {"final_accuracy": (0.70, 0.1 / 2**0.5), "best_accuracy": (0.725, 0.05 / 2**0.5),
                "final_loss": (0.8, 0.2 / 2**0.5)}
    for column, (mean, std) in expected.items():
        np.testing.assert_allclose([a[f"{column}_mean"], a[f"{column}_std"]], [mean, std],
                                   rtol=1e-9)
    assert b["final_accuracy_mean"] == 0.90 and np.isnan(b["final_accuracy_std"])
    assert "| 0.0 | 2/2 | 0.7000 ± 0.0707 | 0.7250 ± 0.0354 | 0.8000 ± 0.1414 |" in text
    assert "| 0.1 | 1/2 | 0.9000 | 0.9000 | 0.3000 |" in text
    assert open(tmp_path / "summary.md").read() == text
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["final_accuracy_std"]) == pytest.approx(0.1 / 2**0.5, rel=1e-9)
    with open(tmp_path / "runs.csv") as f:
        assert [r["run"] for r in csv.DictReader(f)] == names
    assert min(Image.open(tmp_path / "summary.png").size) > 100
