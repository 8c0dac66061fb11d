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

from jaxcls import defaults, sweep
from tests.conftest import ROOT


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


# A one-block ViT on 8x8 digits: settings that differ only in seed compile to one program, which
# the runs of this file share through a persistent compilation cache.
CONFIG = """from tests.conftest import tiny_config


def get_config():
    return tiny_config(model="vit_ti4", final_eval=False, schedule="constant", num_steps=4,
                       model_kwargs=dict(width=16, depth=1, num_heads=2, mlp_dim=32))
"""


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("jax_cache"))


def _env(compile_cache, **extra):
    return dict(os.environ, PYTHONPATH=ROOT, JAX_COMPILATION_CACHE_DIR=compile_cache,
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
                PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"], **extra)


def _sweep_cli(tmp_path, compile_cache, sweep_text: str, *flags: str):
    (tmp_path / "config.py").write_text(CONFIG)
    (tmp_path / "sweep.py").write_text(sweep_text)
    out = subprocess.run(
        [sys.executable, "-m", "jaxcls.sweep", f"--config={tmp_path / 'config.py'}",
         f"--sweep={tmp_path / 'sweep.py'}", f"--workdir={tmp_path / 'runs'}", *flags],
        cwd=ROOT, env=_env(compile_cache), capture_output=True, text=True, timeout=600)
    return out.returncode, out.stdout + out.stderr


SEEDS = "from jaxcls.sweep import axis\n\n\ndef get_sweep():\n    return axis('seed', [0, 1])\n"


@pytest.mark.slow
def test_sweep_runs_each_setting_skips_finished_and_resumes_killed(tmp_path, compile_cache):
    runs = tmp_path / "runs"
    # Setting 1 was killed after a checkpoint at step 2, before writing its summary.
    code, log = _sweep_cli(tmp_path, compile_cache, SEEDS, "--index=1", "--config.num_steps=2")
    assert code == 0, log[-3000:]
    os.remove(runs / "seed=1" / "summary.json")
    first_rows = _rows(runs / "seed=1")

    code, log = _sweep_cli(tmp_path, compile_cache, SEEDS)
    assert code == 0, log[-3000:]
    assert "sweep [1/2] seed=0" in log and "sweep [2/2] seed=1" in log
    assert log.count("resumed from") == 1 and f"{runs}/seed=1/checkpoints/2" in log
    for seed in (0, 1):
        assert json.load(open(runs / f"seed={seed}" / "config.json"))["seed"] == seed
        assert [r["step"] for r in _rows(runs / f"seed={seed}")] == [1, 2, 3, 4]
    assert _rows(runs / "seed=1")[:2] == first_rows  # resumed at step 2, not restarted
    # Another seed: another initialisation and data order. (Step 1's loss is log(10) for
    # both: the head starts at zero.)
    losses = [_rows(runs / f"seed={seed}")[-1]["loss"] for seed in (0, 1)]
    assert abs(losses[0] - losses[1]) > 1e-4

    code, log = _sweep_cli(tmp_path, compile_cache, SEEDS)
    assert code == 0, log[-3000:]
    assert "seed=0: finished before, skipped" in log and "seed=1: finished before, skipped" in log
    assert "train state" not in log  # no run started
    # A changed base config (more steps) is not finished: the run would continue.
    config = sweep.apply(defaults.load_config(str(tmp_path / "config.py")), {"seed": 0})
    assert sweep.is_finished(str(runs / "seed=0"), config)
    config.num_steps = 5
    assert not sweep.is_finished(str(runs / "seed=0"), config)


def test_unknown_key_fails_before_any_run(tmp_path, compile_cache):
    code, log = _sweep_cli(tmp_path, compile_cache, "def get_sweep():\n"
                           "    return [{'label_smoothing': 0.1}, {'label_smothing': 0.1}]\n")
    assert code != 0
    assert "sweep setting 1 {'label_smothing': 0.1}: unknown config key 'label_smothing'" in log
    assert not os.path.exists(tmp_path / "runs")  # setting 0 did not start


@pytest.mark.slow
def test_slurm_array_task_runs_its_setting(tmp_path, compile_cache):
    code, log = _sweep_cli(tmp_path, compile_cache, SEEDS.replace("[0, 1]", "[0, 1, 2]"),
                           "--slurm", "--sbatch=--gres=gpu:1", "--sbatch", "--time=01:00:00",
                           "--config.num_steps=2")
    assert code == 0, log[-3000:]
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
    task = subprocess.run(["bash", str(tmp_path / "runs" / "sweep.sbatch")],
                          env=_env(compile_cache, SLURM_ARRAY_TASK_ID="1"),
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


def test_a_failing_setting_does_not_end_the_sweep_and_a_signal_does(tmp_path, monkeypatch):
    resolved = [(f"s={i}", ml_collections.ConfigDict({"num_steps": 1})) for i in range(4)]
    started = []

    def fake_run(config, run_dir):
        started.append(os.path.basename(run_dir))
        if run_dir.endswith("s=1"):
            raise FloatingPointError("loss is NaN")
        return {"stopped_by": "SIGTERM"} if run_dir.endswith("s=3") else {}

    monkeypatch.setattr(sweep.train, "run", fake_run)
    monkeypatch.setattr(sweep, "is_finished", lambda run_dir, config: False)
    assert sweep.run_local(resolved, str(tmp_path), [0, 1, 2, 3]) == ["s=1"]
    assert started == ["s=0", "s=1", "s=2", "s=3"]
    started.clear()
    # A setting stopped by a signal (saved, resumable) stops the sweep: s=2 does not start.
    assert sweep.run_local(resolved, str(tmp_path), [3, 2]) == []
    assert started == ["s=3"]
