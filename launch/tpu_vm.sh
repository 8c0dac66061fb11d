#!/usr/bin/env bash
# Cloud TPU VM pod slices: create a slice, copy this checkout to every worker and install it,
# then run the same jaxcls command on all workers at once (jaxcls detects the TPU VM and
# jax.distributed finds the other workers through the VM metadata).
#
#   export TPU_NAME=jaxcls-v4-32 ZONE=us-central2-b ACCELERATOR=v4-32 VERSION=tpu-ubuntu2204-base
#   launch/tpu_vm.sh create                 # add SPOT=1 for a preemptible (spot) slice
#   launch/tpu_vm.sh setup                  # copy HEAD of this checkout, pip install on all
#   launch/tpu_vm.sh train --config=configs/imagenet_resnet50.py --workdir=/mnt/shared/r50
#   launch/tpu_vm.sh stop                   # SIGTERM: save a checkpoint and exit
#   launch/tpu_vm.sh delete
#
# VERSION is the TPU software image of the generation: tpu-ubuntu2204-base (v4),
# v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv5 (v5p), v2-alpha-tpuv6e (v6e).
# --workdir must be a directory every worker sees at the same path (a Filestore NFS share or a
# Cloud Storage bucket mounted with gcsfuse): all workers write their parts of each checkpoint.
# `train` runs in the background on every worker, logging to ~/jaxcls/train.log; running it
# again after a preemption (or `stop`) resumes from the last checkpoint.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
tpu=(gcloud compute tpus tpu-vm)
on_all() { "${tpu[@]}" ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"; }

case "${1:-}" in
  create)
    "${tpu[@]}" create "$TPU_NAME" --zone="$ZONE" \
        --accelerator-type="${ACCELERATOR:?set ACCELERATOR, e.g. v4-32}" \
        --version="${VERSION:?set VERSION, e.g. tpu-ubuntu2204-base}" ${SPOT:+--spot}
    ;;
  setup)
    archive=$(mktemp --suffix=.tar.gz)
    git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$archive" HEAD
    "${tpu[@]}" scp "$archive" "$TPU_NAME:jaxcls.tar.gz" --zone="$ZONE" --worker=all
    rm -f "$archive"
    on_all 'rm -rf ~/jaxcls && mkdir ~/jaxcls && tar -xzf ~/jaxcls.tar.gz -C ~/jaxcls &&
            python3 -m pip install -q -U "jax[tpu]" && python3 -m pip install -q -e ~/jaxcls'
    ;;
  train)
    shift
    args=$(printf '%q ' "$@")
    on_all "cd ~/jaxcls && nohup python3 -m jaxcls.main $args >> train.log 2>&1 < /dev/null &"
    ;;
  stop)
    # The newest jaxcls.main process of the user on each worker.
    on_all 'pkill -TERM -n -u "$USER" -f "python3 -m jaxcls.main" || true'
    ;;
  delete)
    "${tpu[@]}" delete "$TPU_NAME" --zone="$ZONE" --quiet
    ;;
  *)
    echo "usage: $0 create | setup | train JAXCLS_ARGS... | stop | delete" >&2
    exit 2
    ;;
esac
