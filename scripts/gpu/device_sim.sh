#!/bin/sh
# Run the project's benchmark through the Flower simulation on a GPU machine.
# Expects the wheels already installed in /tmp/site (see README.md) and the project checkout
# as the working directory. Extra arguments go to `python -m fedrouter.bench`; `--no-ab`
# skips the in-process A/Bs (per-swap times, a warm training call), which take a minute.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export FEDROUTER_CACHE="${FEDROUTER_CACHE:-/tmp/frcache}" PYTHON=python3
export PYTHONPATH="/tmp/site:$PWD"
here=$(cd "$(dirname "$0")" && pwd)
out="${OUT:-/tmp/gpu-out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout "${SIM_TIMEOUT:-400}" python3 -m fedrouter.bench --preset "$here/paper_gpu.sh" \
    --geometry llama-3.2-1b --out "$out/bench.json" --workdir /tmp/fr-gpu "$@" \
    > "$out/bench.log" 2>&1
status=$?
grep -v -E "Warning|warnings.warn|Loading weights|Writing model" "$out/bench.log"
exit $status
