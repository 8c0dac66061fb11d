"""Ablation sweeps: one base config, a list of overrides, one run per override.

    python -m jaxcls.sweep --config=configs/X.py --sweep=configs/sweeps/Y.py --workdir=runs/Y
    python -m jaxcls.sweep ... --slurm [--sbatch=--gres=gpu:1 ...]  # writes runs/Y/sweep.sbatch
    python -m jaxcls.sweep summarize runs/Y    # summary.md, summary.csv, runs.csv, summary.png

A sweep file defines `get_sweep()`, returning a list of dicts of config overrides; dotted keys
reach into nested keys ("mixup.mixup_alpha"). `axis`, `product` and `zipped` build the list:

    product(axis("label_smoothing", [0.0, 0.1]), axis("seed", [0, 1]))  # 4 settings

Each setting runs in WORKDIR/<name from its overrides> ("label_smoothing=0.1,seed=1"); every
setting is resolved and validated before the first starts. Locally they run one after another;
rerunning skips finished ones and resumes a half-finished one from its checkpoint. `--slurm`
writes an sbatch array script instead, task i running setting i (`--index=i`).
`--config.key=value` flags change the base config of every setting.
"""

import csv
import hashlib
import itertools
import json
import math
import os
import re
import shlex
import sys

import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from jaxcls import cli, defaults, train, writers

SWEEP_FILE = "sweep.json"  # in the sweep's workdir: the settings and their run directories
METRICS = (  # (column, split, metric, reduction over that split's rows)
    ("final_accuracy", "eval", "accuracy", "last"),
    ("best_accuracy", "eval", "accuracy", "max"),
    ("final_loss", "eval", "loss", "last"),
)


# ---- building the list of settings ------------------------------------------------------------

def axis(key: str, values) -> list[dict]:
    """One setting per value of `key`."""
    return [{key: v} for v in values]


def product(*axes: list[dict]) -> list[dict]:
    """Every combination of one setting from each of `axes` (the last varies fastest)."""
    return [{k: v for d in combo for k, v in d.items()} for combo in itertools.product(*axes)]


def zipped(*axes: list[dict]) -> list[dict]:
    """Setting i of every axis merged into one, for axes of equal length."""
    if len({len(a) for a in axes}) > 1:
        raise ValueError(f"zipped axes differ in length: {[len(a) for a in axes]}")
    return [{k: v for d in combo for k, v in d.items()} for combo in zip(*axes, strict=True)]


def load_sweep(path: str) -> list[dict]:
    """The settings that `get_sweep()` of the file at `path` returns."""
    settings = defaults.load_module(path, "sweep file").get_sweep()
    if not settings or not all(isinstance(s, dict) for s in settings):
        raise ValueError(f"{path}: get_sweep() must return a non-empty list of dicts")
    return settings


# ---- resolving settings -----------------------------------------------------------------------

def apply(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
    """A copy of `config` with `overrides` ({"key" or "parent.key": value}) set; a key the
    config does not have raises ValueError naming it."""
    config = config.copy_and_resolve_references()
    known = defaults.get_config()
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node, default = config, known
        for part in parents:
            if not isinstance(node.get(part), ml_collections.ConfigDict):
                raise ValueError(f"unknown config key {key!r} ({part!r} is not a nested config)")
            node, default = node[part], default.get(part, ml_collections.ConfigDict())
        # Nested configs that are empty by default (model_kwargs) are free-form: their keys
        # are checked by whoever reads them (train.validate builds the model).
        free_form = parents and isinstance(default, ml_collections.ConfigDict) and not default
        if last not in node and not free_form:
            raise ValueError(f"unknown config key {key!r}; valid keys are listed in "
                             f"jaxcls/defaults.py")
        try:
            with node.unlocked():
                node[last] = value
        except (TypeError, ValueError) as e:
            raise ValueError(f"config key {key!r} cannot take {value!r}: {e}") from e
    return config


def run_name(overrides: dict) -> str:
    """A directory name from the overrides: 'label_smoothing=0.1,seed=1' ('base' if none)."""
    if not overrides:
        return "base"
    name = ",".join(f"{k}={v}" for k, v in overrides.items())
    name = re.sub(r"[^A-Za-z0-9._=,+-]", "-", name)
    if len(name) > 120:  # file systems allow 255 bytes; keep it readable and unique
        name = name[:100] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def resolve(config: ml_collections.ConfigDict, settings: list[dict]
            ) -> list[tuple[str, ml_collections.ConfigDict]]:
    """(run name, validated config) of every setting; fails on the first bad one, naming it."""
    resolved = []
    for i, overrides in enumerate(settings):
        try:
            c = apply(config, overrides)
            train.validate(c)
        except (ValueError, TypeError, FileNotFoundError) as e:
            raise type(e)(f"sweep setting {i} {overrides}: {e}") from e
        resolved.append((run_name(overrides), c))
    names = [n for n, _ in resolved]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"two sweep settings share the run directory {dup!r}")
    return resolved


def write_plan(workdir: str, settings: list[dict], names: list[str]) -> None:
    """WORKDIR/sweep.json: each setting's overrides and run directory, for `summarize`."""
    os.makedirs(workdir, exist_ok=True)
    plan = [{"name": n, "overrides": s} for n, s in zip(names, settings, strict=True)]
    path = os.path.join(workdir, SWEEP_FILE)
    with open(f"{path}.{os.getpid()}", "w") as f:  # array tasks write it at the same time
        json.dump({"settings": plan}, f, indent=2, default=repr)
    os.replace(f"{path}.{os.getpid()}", path)


def is_finished(run_dir: str, config: ml_collections.ConfigDict) -> bool:
    """Whether `run_dir` holds a run of `config` that trained all its steps. (A changed base
    config, e.g. more steps, makes the run continue instead.)"""
    paths = [os.path.join(run_dir, f) for f in ("summary.json", "config.json")]
    if not all(map(os.path.exists, paths)):
        return False
    with open(paths[0]) as f, open(paths[1]) as g:
        summary, saved = json.load(f), json.load(g)
    return (summary["steps"] >= summary["total_steps"]
            and saved == json.loads(config.to_json_best_effort()))


# ---- running ----------------------------------------------------------------------------------

def run_local(resolved: list[tuple[str, ml_collections.ConfigDict]], workdir: str,
              indices: list[int]) -> list[str]:
    """Runs settings `indices` one after another; returns the names of those that failed.
    A run stopped by SIGTERM/SIGINT (saved, resumable) stops the sweep."""
    failed = []
    for i in indices:
        name, config = resolved[i]
        run_dir = os.path.join(workdir, name)
        if is_finished(run_dir, config):
            logging.info("sweep [%d/%d] %s: finished before, skipped", i + 1, len(resolved), name)
            continue
        logging.info("sweep [%d/%d] %s", i + 1, len(resolved), name)
        try:
            summary = train.run(config, run_dir)
        except Exception:  # one diverging setting must not end the sweep
            logging.exception("sweep setting %s failed", name)
            failed.append(name)
            continue
        if summary.get("stopped_by"):
            logging.info("sweep stopped by %s; rerun the command to continue",
                         summary["stopped_by"])
            break
    return failed


def slurm_script(argv: list[str], num_settings: int, workdir: str,
                 sbatch_options: list[str]) -> str:
    """An sbatch array script whose task i reruns `argv` (this command) with --index=i."""
    workdir = os.path.abspath(workdir)
    own = ("--slurm", "--noslurm", "--sbatch", "--index")  # the flags that made this script
    args, value_of_own = [], False
    for a in argv:
        if not value_of_own and not a.startswith(own):
            args.append(a)
        value_of_own = a in ("--sbatch", "--index")  # '--index 3': drop the 3 too
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name={os.path.basename(workdir.rstrip('/'))}",
             f"#SBATCH --array=0-{num_settings - 1}",
             f"#SBATCH --output={workdir}/slurm-%A_%a.out",
             *(f"#SBATCH {o}" for o in sbatch_options),
             "set -euo pipefail",
             f"cd {shlex.quote(os.getcwd())}",
             " ".join(["exec python -m jaxcls.sweep", *map(shlex.quote, args),
                       "--index=${SLURM_ARRAY_TASK_ID}"])]
    return "\n".join(lines) + "\n"


# ---- summarizing ------------------------------------------------------------------------------

def run_metrics(run_dir: str) -> dict[str, float] | None:
    """METRICS of one run from its metrics.jsonl (None if it has not logged any)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    out = {"steps": max((r["step"] for r in rows), default=0)}
    for column, split, metric, reduction in METRICS:
        values = [r[metric] for r in rows if r["split"] == split and metric in r]
        if values:
            out[column] = values[-1] if reduction == "last" else max(values)
    return out


def summarize(workdir: str) -> tuple[list[dict], list[dict]]:
    """(one row per run, one row per group of runs that differ only in `seed`, with the
    mean and sample standard deviation (ddof=1) of each metric over its seeds)."""
    with open(os.path.join(workdir, SWEEP_FILE)) as f:
        plan = json.load(f)["settings"]
    runs, groups = [], {}
    for item in plan:
        measured = run_metrics(os.path.join(workdir, item["name"]))
        row = {"run": item["name"], **item["overrides"], **(measured or {})}
        runs.append(row)
        group = {k: v for k, v in item["overrides"].items() if k != "seed"}
        groups.setdefault(json.dumps(group, sort_keys=True, default=repr), (group, []))[1].append(
            row if measured else None)
    table = []
    for group, members in groups.values():
        done = [m for m in members if m is not None]
        row = {**group, "runs": f"{len(done)}/{len(members)}"}
        for column, *_ in METRICS:
            values = [m[column] for m in done if column in m]
            row[f"{column}_mean"] = float(np.mean(values)) if values else math.nan
            row[f"{column}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        table.append(row)
    return runs, table


def _columns(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def write_csv(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, _columns(rows))
        writer.writeheader()
        writer.writerows(rows)


def markdown(table: list[dict]) -> str:
    """The grouped table with 'mean ± std' cells."""
    keys = [c for c in _columns(table) if not c.endswith(("_mean", "_std"))]
    header = keys + [column for column, *_ in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in table:
        cells = [str(row.get(k, "")) for k in keys]
        for column, *_ in METRICS:
            mean, std = row[f"{column}_mean"], row[f"{column}_std"]
            cells.append("" if math.isnan(mean) else
                         f"{mean:.4f}" + ("" if math.isnan(std) else f" ± {std:.4f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(path: str, table: list[dict]) -> None:
    """Final and best eval accuracy per group (mean, error bars: std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [(", ".join(f"{k}={v}" for k, v in row.items() if k != "runs"
                         and not k.endswith(("_mean", "_std"))) or "base") + f" ({row['runs']})"
              for row in table]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(table) + 1.5))
    y = np.arange(len(table))
    for offset, column in ((-0.2, "final_accuracy"), (0.2, "best_accuracy")):
        ax.barh(y + offset, [r[f"{column}_mean"] for r in table], height=0.4,
                xerr=[np.nan_to_num(r[f"{column}_std"]) for r in table], label=column)
    ax.set_yticks(y, labels)
    ax.set_xlabel("eval accuracy")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_summary(workdir: str) -> str:
    """Writes summary.md, summary.csv (grouped), runs.csv and summary.png; returns the table."""
    runs, table = summarize(workdir)
    text = markdown(table)
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(text)
    write_csv(os.path.join(workdir, "summary.csv"), table)
    write_csv(os.path.join(workdir, "runs.csv"), runs)
    plot(os.path.join(workdir, "summary.png"), table)
    return text


# ---- command line -----------------------------------------------------------------------------

def define_flags() -> None:
    """The command's flags (defined only when it runs: jaxcls.main defines --config too)."""
    config_flags.DEFINE_config_file("config", None, "The base config file.", lock_config=True)
    flags.DEFINE_string("sweep", None, "A file whose get_sweep() returns the list of overrides.")
    flags.DEFINE_string("workdir", None, "The sweep's directory: one run directory per setting.")
    flags.DEFINE_integer("index", None, "Run only setting INDEX (what a SLURM array task does).")
    flags.DEFINE_bool("slurm", False, "Write WORKDIR/sweep.sbatch, a SLURM array, instead of "
                      "running.")
    flags.DEFINE_multi_string("sbatch", [], "An extra #SBATCH option for --slurm, e.g. "
                              "--sbatch=--gres=gpu:1 (repeatable).")


def main(argv):
    writers.quiet_libraries()
    if argv[1:2] == ["summarize"]:
        if len(argv) != 3:
            raise app.UsageError("usage: python -m jaxcls.sweep summarize WORKDIR")
        print(write_summary(argv[2]), end="")
        return
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name in ("config", "sweep", "workdir"):
        if flags.FLAGS[name].value is None:
            raise app.UsageError(f"--{name} is required")
    workdir = flags.FLAGS.workdir
    settings = load_sweep(flags.FLAGS.sweep)
    resolved = resolve(flags.FLAGS.config, settings)
    index = flags.FLAGS.index
    if index is not None and not 0 <= index < len(resolved):
        raise app.UsageError(f"--index={index}: the sweep has {len(resolved)} settings")
    write_plan(workdir, settings, [n for n, _ in resolved])
    if flags.FLAGS.slurm:
        path = os.path.join(workdir, "sweep.sbatch")
        with open(path, "w") as f:
            f.write(slurm_script(sys.argv[1:], len(resolved), workdir, flags.FLAGS.sbatch))
        logging.info("wrote %s (%d tasks): sbatch %s", path, len(resolved), path)
        return
    indices = [index] if index is not None else list(range(len(resolved)))
    failed = run_local(resolved, workdir, indices)
    if failed:
        raise SystemExit(f"sweep settings failed: {failed}")
    logging.info("sweep done: python -m jaxcls.sweep summarize %s", workdir)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
