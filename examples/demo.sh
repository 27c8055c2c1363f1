#!/usr/bin/env bash
# `make demo`: the whole journey on one machine, against devcluster (Nomad's HTTP API, local):
# devcluster up -> deploy the CPU example (real PyTriton) -> wait healthy -> infer with
# tritonclient -> scale to 2 -> status. It leaves the cluster running so you can explore;
# the last lines say how to stop it. Every step has a deadline; any failure stops the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"   # devcluster's raw_exec tasks find `nomad-triton` on PATH
STATE_DIR="${DEMO_STATE_DIR:-.devcluster/demo}"
PORT="${DEMO_PORT:-4646}"
JOB=triton-cpu

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Starting devcluster on 127.0.0.1:${PORT} (state in ${STATE_DIR})"
if nomad-triton dev status --state-dir "$STATE_DIR" >/dev/null 2>&1; then
  echo "devcluster already running in ${STATE_DIR}; reusing it"
else
  nomad-triton dev up --state-dir "$STATE_DIR" --port "$PORT" --config devcluster.toml
fi
export NOMAD_ADDR="http://127.0.0.1:${PORT}"

step "Deploying jobs/cpu-example.toml (server-side parse, plan, register, follow the rollout)"
nomad-triton deploy jobs/cpu-example.toml --timeout 4m

step "Inference through Triton's HTTP API (address from Nomad's service registry)"
python examples/infer.py --service "$JOB" --model mlp
python examples/infer.py --service "$JOB" --model relu_onnx

step "Scaling to 2 (a Nomad scaling event) and following the rollout until healthy"
nomad-triton scale "$JOB" 2 --message "make demo: scale to 2" --timeout 3m

step "Status: deployment, allocation health, per-model readiness"
nomad-triton status "$JOB"

cat <<MSG

Done. The cluster keeps running; try:
  export NOMAD_ADDR=${NOMAD_ADDR}
  nomad-triton status ${JOB}
  nomad-triton probe ${JOB}
Stop everything with:
  nomad-triton stop ${JOB} --purge && nomad-triton dev down --state-dir ${STATE_DIR}
MSG
