"""Command-line errors (jaxcls/cli.py): one `error:` line on stderr naming the key, path or
value, a non-zero exit, the traceback only with --verbose / JAXCLS_TRACEBACK=1; bugs keep
their traceback; no TPU-probe noise."""

import json
import os
import subprocess
import sys

from jaxcls import cli, models, writers
from tests.conftest import ROOT

# Runs each command's module as __main__ in this one process (one Python + JAX start instead
# of one per command), removing the flags it defined before the next; prints one JSON line.
_EVERY_COMMAND = r"""
import contextlib, io, json, os, runpy, sys
from absl import flags
from jaxcls import cli, writers

base = set(flags.FLAGS)
results = []
for module, *args in json.loads(sys.argv[1]):
    env = module.split(":")[1:]  # "jaxcls.main:JAXCLS_TRACEBACK=1": with that variable
    module = module.split(":")[0]
    os.environ.update(e.split("=", 1) for e in env)
    sys.argv = [module, *args]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            if module == "bug":  # a TypeError inside jaxcls's code, not raised on purpose
                cli.run(lambda argv: writers.format_duration("x"), sys.argv)
            else:
                runpy.run_module(module, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code
        except TypeError:
            code = "raised"
    results.append([code, err.getvalue()])
    for e in env:
        del os.environ[e.split("=")[0]]
    for name in set(flags.FLAGS) - base:
        delattr(flags.FLAGS, name)
print(json.dumps(results))
"""


def _env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=ROOT, **extra)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_main_prints_one_error_line_for_an_unknown_key_and_a_missing_folder(tmp_path):
    base = [sys.executable, "-m", "jaxcls.main", "--config=configs/default.py",
            f"--workdir={tmp_path / 'run'}"]
    missing = str(tmp_path / "no_such_folder")
    runs = {  # started together: each pays the Python + JAX start
        "typo": subprocess.Popen(base[:-1] + [f"--workdir={tmp_path / 'typo_run'}",
                                              "--config.batch_sise=8"], cwd=ROOT, env=_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        "missing": subprocess.Popen(base + [f"--config.dataset=folder:{missing}"], cwd=ROOT,
                                    env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True),
    }
    out = {k: (p.communicate(timeout=300)[1], p.returncode) for k, p in runs.items()}
    assert out["typo"] == ('error: --config.batch_sise=8: unknown config key \'batch_sise\'; '
                           'Did you mean "batch_size" instead of "batch_sise"?\n', 2)
    assert out["missing"] == (f"error: dataset folder '{missing}' does not exist\n", 2)
    assert not os.path.exists(tmp_path / "typo_run")  # the bad key failed before any work


def test_every_command_prints_user_errors_as_one_line(tmp_path):
    nowhere = str(tmp_path / "nowhere")
    cases = [
        ["jaxcls.main", "--config=configs/no_such_config.py", f"--workdir={nowhere}"],
        ["jaxcls.main", "--config=configs/default.py", f"--workdir={nowhere}", "extra"],
        ["jaxcls.main", "--config=configs/default.py", f"--workdir={nowhere}",
         "--config.model_kwargs.bogus_key=1"],
        ["jaxcls.evaluate", f"--workdir={nowhere}"],
        ["jaxcls.predict", f"--workdir={nowhere}", "a.jpg"],
        ["jaxcls.explain", f"--workdir={nowhere}", f"--out={nowhere}", f"{nowhere}.jpg"],
        ["jaxcls.augviz", "--config=configs/default.py", f"--out={nowhere}.png",
         f"--config.dataset=folder:{nowhere}"],
        ["jaxcls.sweep", "--config=configs/default.py", f"--sweep={nowhere}.py",
         f"--workdir={nowhere}"],
        ["jaxcls.benchmark", "--config=configs/default.py", "--config.optimiser=adamw"],
        ["jaxcls.weights", "convert", f"{nowhere}.pth", nowhere, "--model=resnet18"],
        ["jaxcls.zeroshot", f"--weights={nowhere}.pt", f"--dataset=folder:{nowhere}"],
        ["jaxcls.models", "--names=resnet19"],
        ["jaxcls.models", "--names=resnet19", "--verbose"],
        ["jaxcls.models:JAXCLS_TRACEBACK=1", "--names=resnet19"],
        ["bug"],
    ]
    proc = subprocess.run([sys.executable, "-c", _EVERY_COMMAND, json.dumps(cases)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    registered = sorted(models.MODELS)
    expected = [
        "error: --config: [Errno 2] No such file or directory: 'configs/no_such_config.py'",
        "error: unexpected arguments: ['extra'] (--help lists the flags)",
        "error: --config.model_kwargs.bogus_key=1: unknown config key 'bogus_key'",
        f"error: {nowhere}/config.json does not exist: is '{nowhere}' a jaxcls run directory?",
        f"error: {nowhere}/config.json does not exist: is '{nowhere}' a jaxcls run directory?",
        f"error: image '{nowhere}.jpg' does not exist",
        f"error: dataset folder '{nowhere}' does not exist",
        f"error: sweep file '{nowhere}.py' does not exist",
        "error: --config.optimiser=adamw: unknown config key 'optimiser'; Did you mean "
        "\"optimizer\" instead of \"optimiser\"?",
        f"error: no weights file {nowhere}.pth",
        f"error: no weights file {nowhere}.pt",
        f"error: config.model='resnet19' is unknown; registered: {registered}",
    ]
    for (code, stderr), line, case in zip(results, expected, cases, strict=False):
        assert code == 2, (case, stderr)
        assert _errors(stderr) == [line], (case, stderr)
        assert "Traceback" not in stderr and "Unable to initialize backend" not in stderr, case
    for code, stderr in results[-3:-1]:  # --verbose, JAXCLS_TRACEBACK=1: the traceback too
        assert code == 2 and "Traceback (most recent call last)" in stderr
        assert _errors(stderr) == [expected[-1]] and stderr.endswith(expected[-1] + "\n")
    code, stderr = results[-1]  # a bug: not a user error, so it propagates with its traceback
    assert code == "raised" and not _errors(stderr)


def test_user_errors_are_those_raised_on_purpose():
    try:
        models.check_name("resnet19")
    except ValueError as e:
        assert cli.is_user_error(e)
    try:
        writers.format_duration("x")  # an implicit TypeError inside jaxcls: a bug
    except TypeError as e:
        assert not cli.is_user_error(e)
    try:
        {}["key"]
    except KeyError as e:  # raised outside jaxcls
        assert not cli.is_user_error(e) and cli.message(e) == "key"
    assert cli.message(FileNotFoundError(2, "No such file", "/x")) == \
        "[Errno 2] No such file: '/x'"
