#!/usr/bin/env bash
# N jaxcls processes on this machine, joined by jax.distributed through a coordinator on
# 127.0.0.1: a multi-host run without the hosts, for trying and testing multi-process code.
#
#   launch/local.sh NUM_PROCESSES python -m jaxcls.main --config=... --workdir=...
#
# Each process gets `--coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=I`
# appended to the command (PORT: a free one, or $COORDINATOR_PORT). Devices per process:
#   CPU (default): $CPU_DEVICES_PER_PROCESS simulated CPU devices each (default 1); the
#                  processes all-reduce over gloo.
#   GPUs:          GPUS_PER_PROCESS=K gives process I the GPUs I*K .. I*K+K-1.
# SIGTERM or SIGINT (Ctrl-C) is forwarded to every process: they agree on a step, save a
# checkpoint there and exit 0; rerun the same command to resume. If one process fails, the
# others are stopped (they would wait for it forever). Exits with the first non-zero status.
set -euo pipefail

if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES COMMAND [ARGS...]" >&2
  exit 2
fi
num_processes=$1
shift

port=${COORDINATOR_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

pids=()
for ((i = 0; i < num_processes; i++)); do
  if [[ -n "${GPUS_PER_PROCESS:-}" ]]; then
    gpus=$(seq -s, $((i * GPUS_PER_PROCESS)) $(((i + 1) * GPUS_PER_PROCESS - 1)))
    env_vars=(CUDA_VISIBLE_DEVICES="$gpus")
  else
    # XLA reads the simulated device count when JAX starts, before jaxcls runs.
    env_vars=(JAX_PLATFORMS=cpu JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo
              XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${CPU_DEVICES_PER_PROCESS:-1}")
  fi
  env "${env_vars[@]}" "$@" --coordinator_address="127.0.0.1:$port" \
      --num_processes="$num_processes" --process_id="$i" &
  pids+=($!)
done

all_pids=("${pids[@]}")
forward() {
  for pid in "${all_pids[@]}"; do kill -"$1" "$pid" 2>/dev/null || true; done
}
trap 'forward TERM' TERM INT

status=0
kill_at=""
while ((${#pids[@]} > 0)); do
  alive=()
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      alive+=("$pid")
      continue
    fi
    set +e
    wait "$pid"  # the exit status of an ended child, kept by bash
    rc=$?
    set -e
    if ((rc != 0 && status == 0)); then
      status=$rc
      echo "$0: process $pid exited with status $rc; stopping the others" >&2
      forward TERM
      kill_at=$((SECONDS + 5))
    fi
  done
  if [[ -n "$kill_at" ]] && ((SECONDS >= kill_at)); then forward KILL; fi
  pids=("${alive[@]}")
  if ((${#pids[@]} > 0)); then sleep 0.5; fi  # traps (SIGTERM) run between sleeps
done
exit "$status"
