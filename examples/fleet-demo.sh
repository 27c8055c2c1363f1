#!/usr/bin/env bash
# `make fleet-demo`: a fleet on one machine. devcluster with three simulated GPU pools plus the CPU
# pool (devcluster-fleet.toml) -> plan the 3-stage fleet (examples/fleet/fleet.toml) -> deploy it
# stage by stage (staging on CPU, canary on gpu-l4 with a soak, production on gpu-a100 + gpu-h100),
# each stage gated on health and a real inference per model -> the one-table status.
# Every job really runs PyTriton on this machine's CPU (the GPU devices are simulated), so give it
# a few minutes on a small laptop. It leaves everything running; the last lines say how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"   # devcluster's raw_exec tasks find `nomad-triton` on PATH
STATE_DIR="${FLEET_DEMO_STATE_DIR:-.devcluster/fleet-demo}"
PORT="${FLEET_DEMO_PORT:-4656}"
FLEET=examples/fleet/fleet.toml

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Starting the fleet devcluster on 127.0.0.1:${PORT} (pools: default, gpu-a100, gpu-h100, gpu-l4)"
if nomad-triton dev status --state-dir "$STATE_DIR" >/dev/null 2>&1; then
  echo "devcluster already running in ${STATE_DIR}; reusing it"
else
  nomad-triton dev up --state-dir "$STATE_DIR" --port "$PORT" --config devcluster-fleet.toml
fi
export NOMAD_ADDR="http://127.0.0.1:${PORT}"

step "Planning the fleet: every job's diff and scheduler outcome, placement failures first"
set +e
nomad-triton fleet plan "$FLEET" >/dev/null
code=$?
set -e
case $code in 0) echo "no changes";; 1) echo "changes planned (exit 1, as 'nomad job plan')";;
  *) echo "fleet plan failed (exit $code)"; nomad-triton fleet plan "$FLEET"; exit "$code";; esac

step "Deploying ${FLEET}: stages in order, the jobs of a stage in parallel, gates between stages"
nomad-triton fleet deploy "$FLEET"

step "Status: every toolkit job, GPUs per pool"
nomad-triton status

# --- Autoscaler agent step (added by the lead once `autoscale agent` is merged) -----------------
# Placeholder: start `nomad-triton autoscale agent` here, put a short load on one pool with
# examples/loadgen.py, and show the agent scaling that pool (then `nomad-triton status` again).
# ----------------------------------------------------------------------------------------------

cat <<MSG

Done. The fleet keeps running; try:
  export NOMAD_ADDR=${NOMAD_ADDR}
  nomad-triton status --watch
  nomad-triton fleet status ${FLEET}
  nomad-triton render examples/fleet/triton-gpu-pools.toml
Stop everything with:
  for j in triton-cpu triton-gpu-l4 triton-gpu-a100 triton-gpu-h100; do nomad-triton stop \$j --purge; done
  nomad-triton dev down --state-dir ${STATE_DIR}
MSG
