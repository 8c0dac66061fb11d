"""Multi-process runs: 2 processes x 2 CPU devices joined by jax.distributed (gloo collectives,
coordinator on 127.0.0.1) through launch/local.sh == 1 process x 4 devices; SIGTERM to the
launcher, resumed on 1 process; cluster detection; the launchers parse."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import yaml

from jaxcls import checkpoint, distributed
from jaxcls.data import loader, sources
from tests.conftest import ROOT
from tests.test_distributed import _final_params, _finish, _rows, _wait_for_step

CONFIG = """
import json
from tests.conftest import tiny_config
def get_config():
    return tiny_config(**json.loads(OVERRIDES))
"""


def _main(tmp_path, workdir: str, processes: int, devices: int, **overrides):
    """`python -m jaxcls.main` on `processes` x `devices` CPU devices; more than one process
    goes through launch/local.sh."""
    config = tmp_path / "config.py"
    config.write_text(CONFIG.replace("OVERRIDES", repr(json.dumps(overrides))))
    cmd = [sys.executable, "-m", "jaxcls.main", f"--config={config}", f"--workdir={workdir}"]
    # The resumed 1-process run reuses the reference run's compiled steps from this cache.
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla"),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if processes > 1:
        cmd = ["bash", os.path.join(ROOT, "launch", "local.sh"), str(processes), *cmd]
        env["CPU_DEVICES_PER_PROCESS"] = str(devices)
    else:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.Popen(cmd, env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_two_processes_match_one_and_resume_on_one(tmp_path):
    # Eval every 4 steps over the 360 digits of the eval split: 12 batches of 32, the last one
    # padded, 180 examples per process.
    # SGD: Adam's division by sqrt(v) amplifies the all-reduce's rounding (summed in another
    # order over 2 processes) to ~1e-3 relative by step 40; with SGD it stays ~1e-7.
    # Logged every 5 steps (and at every eval): several steps' metrics wait on several local
    # devices at each log point, the shape of the README's command that once deadlocked.
    overrides = dict(num_steps=40, batch_size=32, eval_every_steps=4, checkpoint_every_steps=100,
                     log_every_steps=5, optimizer="sgd", learning_rate=0.05)
    logged = [s for s in range(1, 41) if s % 5 == 0 or s % 4 == 0]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    reference = _main(tmp_path, one, processes=1, devices=4, **overrides)

    proc = _main(tmp_path, two, processes=2, devices=2, **overrides)
    _wait_for_step(two, 5, proc, timeout=600)
    proc.send_signal(signal.SIGTERM)  # to local.sh, which forwards it to both processes
    out = _finish(proc, timeout=300)
    assert "process 1 of 2 (flags): 2 local of 4 devices" in out
    stopped = json.load(open(os.path.join(two, "summary.json")))
    assert stopped["stopped_by"] == "SIGTERM" and 5 <= stopped["steps"] < 40, stopped
    saved = stopped["steps"]
    assert saved % 5 == 0  # the processes agree at log points
    assert str(saved) in os.listdir(os.path.join(two, "checkpoints"))
    # Only process 0 wrote: every log point once.
    assert [r["step"] for r in _rows(two)] == [s for s in logged if s <= saved]

    out = _finish(_main(tmp_path, two, processes=1, devices=4, **overrides))
    assert f"resumed from {os.path.join(two, 'checkpoints', str(saved))}" in out
    _finish(reference)

    # Steps 1..saved ran on 2 processes, the rest on 1: every loss as in the 1-process run
    # (the all-reduces add in a different order, hence the tolerance).
    assert [r["step"] for r in _rows(two)] == [r["step"] for r in _rows(one)] == logged
    np.testing.assert_allclose([r["loss"] for r in _rows(two)],
                               [r["loss"] for r in _rows(one)], rtol=1e-4)
    evals_one, evals_two = _rows(one, "eval"), _rows(two, "eval")
    assert [r["step"] for r in evals_two] == [r["step"] for r in evals_one] == list(range(4, 41, 4))
    for a, b in zip(evals_one, evals_two, strict=True):  # no example counted twice or dropped
        assert round(a["accuracy"] * 360) == round(b["accuracy"] * 360)
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-4)
    a, b = _final_params(one, 40), _final_params(two, 40)
    for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"]), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_readme_multi_process_command_completes(tmp_path):
    # README, "Multi-host": the default recipe as is (log every 50 steps) on 2 x 2 devices.
    workdir = str(tmp_path / "mh")
    env = dict(os.environ, CPU_DEVICES_PER_PROCESS="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        ["bash", "launch/local.sh", "2", sys.executable, "-m", "jaxcls.main",
         "--config=configs/default.py", f"--workdir={workdir}", "--config.num_steps=60"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in _rows(workdir)] == [50, 60]
    assert [r["step"] for r in _rows(workdir, "eval")] == [60]
    assert json.load(open(os.path.join(workdir, "summary.json")))["steps"] == 60


def _child_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """process_id -> pid of the processes launch/local.sh started."""
    children = {}
    for pid in open(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read().split():
        args = open(f"/proc/{pid}/cmdline").read().split("\0")
        index = [a for a in args if a.startswith("--process_id=")]
        if index:
            children[int(index[0].split("=")[1])] = int(pid)
    return children


@pytest.mark.slow
def test_sigterm_bounds_a_stuck_multi_process_run(tmp_path):
    # Process 1 freezes (SIGSTOP), then process 0 gets SIGTERM: it waits for process 1 in the
    # next step's collectives or the stop's all-gather. Its watchdog ends it stop_timeout_s
    # after the last progress, non-zero and naming the last checkpoint; local.sh then kills
    # process 1 and passes the status on.
    workdir = str(tmp_path / "stuck")
    proc = _main(tmp_path, workdir, processes=2, devices=2, num_steps=100_000,
                 log_every_steps=5, checkpoint_every_steps=5, stop_timeout_s=3.0)
    _wait_for_step(workdir, 10, proc, timeout=600)
    children = _child_pids(proc)
    os.kill(children[1], signal.SIGSTOP)
    t = time.time()
    os.kill(children[0], signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert time.time() - t < 60
    assert "SIGTERM, then no progress for 3 s" in out, out[-3000:]
    assert f"last checkpoint: {os.path.join(workdir, 'checkpoints')}" in out


def _as_process(monkeypatch, index: int, count: int) -> None:
    monkeypatch.setattr(jax, "process_index", lambda: index)
    monkeypatch.setattr(jax, "process_count", lambda: count)


@pytest.mark.parametrize("in_memory", [True, False], ids=["array_batches", "grain"])
def test_process_shards_make_the_global_batches(monkeypatch, in_memory):
    # 3 processes x 4 rows == 1 process x 12 rows, batch for batch, across epoch boundaries;
    # and a position saved by any process is the same position for another process count.
    # Both iterators: the whole-batch gather of in-memory arrays, and grain's.
    src = sources.ArraySource(np.zeros((30, 2, 2, 3), np.uint8), np.arange(30))
    make = loader.train_iterator if in_memory else loader.grain_train_iterator
    single = make(src, 12, seed=1, num_threads=1)
    expected = [next(single)["label"] for _ in range(6)]
    shards = []
    for p in range(3):
        _as_process(monkeypatch, p, 3)
        it = make(src, 4, seed=1, num_threads=1)
        shards.append([next(it)["label"] for _ in range(6)])
        assert it.get_state() == single.get_state()
    for k in range(6):
        np.testing.assert_array_equal(np.concatenate([s[k] for s in shards]), expected[k])
    # Eval: every example exactly once over the processes, same number of batches on each.
    seen = []
    for p in range(3):
        _as_process(monkeypatch, p, 3)
        batches = list(loader.eval_batches(src, 12, num_threads=1))
        assert len(batches) == 3
        seen += [int(i) for b in batches for i in b["index"][~b["pad"]]]
    assert sorted(seen) == list(range(30))


def test_iterator_state_of_other_process_counts(tmp_path):
    for p in range(2):
        (tmp_path / f"process_{p}-of-2.json").write_text(json.dumps({"next_index": 7}))
    assert checkpoint._shared_iterator_state(str(tmp_path)) == {"next_index": 7}
    (tmp_path / "process_1-of-2.json").write_text(json.dumps({"next_index": 6}))
    with pytest.raises(ValueError, match="different data positions"):
        checkpoint._shared_iterator_state(str(tmp_path))


def test_local_sh_stops_the_others_when_one_fails():
    # Process 1 fails at once; process 0 would wait for it for a minute (as a real one would
    # wait in a collective): the launcher stops it and returns process 1's status.
    code = ("import sys, time; time.sleep(60) if sys.argv[-1] == '--process_id=0' "
            "else sys.exit(3)")
    result = subprocess.run(["bash", os.path.join(ROOT, "launch", "local.sh"), "2",
                             sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=50)
    assert result.returncode == 3, result.stderr
    assert "exited with status 3; stopping the others" in result.stderr


def test_detect_cluster():
    assert distributed.detect_cluster({}) in (None, "gcetpu")  # gcetpu only on a TPU VM
    slurm = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16", "SLURM_STEP_NODELIST": "gpu[01-02]",
             "SLURM_PROCID": "3", "SLURM_LOCALID": "3", "SLURM_STEP_NUM_NODES": "2"}
    assert distributed.detect_cluster(slurm) == "slurm"
    # An sbatch script outside srun, or a single task, is a single process.
    assert distributed.detect_cluster({**slurm, "SLURM_NTASKS": "1"}) != "slurm"
    no_step = {k: v for k, v in slurm.items() if k != "SLURM_STEP_NODELIST"}
    assert distributed.detect_cluster(no_step) != "slurm"
    ompi = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.0.0.1:1"}
    assert distributed.detect_cluster(ompi) == "ompi"
    assert distributed.detect_cluster({"TPU_WORKER_HOSTNAMES": "w-0,w-1"}) == "gketpu"


def test_slurm_local_device_ids():
    per_gpu = {"SLURM_NTASKS": "16", "SLURM_STEP_NUM_NODES": "2",
               "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
    assert distributed.slurm_local_device_ids(per_gpu) is None  # JAX: GPU number SLURM_LOCALID
    per_node = {**per_gpu, "SLURM_NTASKS": "2"}
    assert distributed.slurm_local_device_ids(per_node) == list(range(8))
    own_gpu = {**per_gpu, "CUDA_VISIBLE_DEVICES": "5"}  # --gpus-per-task=1
    assert distributed.slurm_local_device_ids(own_gpu) == [0]


def test_initialize_rejects_incomplete_flags():
    with pytest.raises(ValueError, match=r"missing \['--process_id'\]"):
        distributed.initialize("127.0.0.1:1234", 2, None, environ={})
    with pytest.raises(ValueError, match="--process_id=2 must be in"):
        distributed.initialize("127.0.0.1:1234", 2, 2, environ={})
    if distributed.detect_cluster({}) is None:  # not on a TPU VM: one SLURM task stays alone
        assert distributed.initialize(environ={"SLURM_NTASKS": "1"}) is None


def test_launchers_parse():
    for script in ("local.sh", "slurm.sbatch", "tpu_vm.sh"):
        subprocess.run(["bash", "-n", os.path.join(ROOT, "launch", script)], check=True)
    with open(os.path.join(ROOT, "launch", "k8s_jobset.yaml")) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    [jobset] = [d for d in docs if d["kind"] == "JobSet"]
    [replicated] = jobset["spec"]["replicatedJobs"]
    job = replicated["template"]["spec"]
    [container] = job["template"]["spec"]["containers"]
    command = " ".join(container["command"] + container.get("args", []))
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    # One pod per process, indexed 0..N-1, all named in the command; process 0's pod hosts
    # the coordinator at JobSet's DNS name <jobset>-<replicated job>-0-0.<subdomain>.
    assert replicated["replicas"] == 1 and job["completionMode"] == "Indexed"
    assert job["parallelism"] == job["completions"] == int(env["NUM_PROCESSES"])
    name = jobset["metadata"]["name"]
    subdomain = jobset["spec"].get("network", {}).get("subdomain", name)
    host, port = env["JAX_COORDINATOR_ADDRESS"].rsplit(":", 1)
    assert host == f"{name}-{replicated['name']}-0-0.{subdomain}" and int(port) > 0
    assert "--num_processes=$NUM_PROCESSES" in command
    assert "--process_id=$JOB_COMPLETION_INDEX" in command
