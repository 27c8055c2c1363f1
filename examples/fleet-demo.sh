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
running_allocs() {  # allocations of job $1 running now
  nomad-triton status "$1" --json | python3 -c 'import json, sys
print(sum(a["client_status"] == "running" for a in json.load(sys.stdin)["allocations"]))' 2>/dev/null || echo "?"
}

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

step "Autoscaler agent: one process for the whole cluster, targets found in Nomad's scaling policies"
AGENT_LOG="${STATE_DIR}/agent.log"
nomad-triton autoscale agent --no-ha --sd --listen 127.0.0.1:0 --duration 120 --json >"$AGENT_LOG" 2>&1 &
AGENT_PID=$!
trap 'kill "$AGENT_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 30); do grep -q '"target_added"' "$AGENT_LOG" 2>/dev/null && break; sleep 1; done
grep -o '"target": "[^"]*"' "$AGENT_LOG" | sort -u | sed 's/^/  found /' || true
before=$(running_allocs triton-gpu-l4)

step "Load on the gpu-l4 pool only (examples/loadgen.py through Nomad's service discovery, 45 s)"
python3 examples/loadgen.py --nomad-job triton-gpu-l4 --model mlp --phase 45s@400rps --concurrency 64 \
  --refresh 1 >"${STATE_DIR}/loadgen.log" 2>&1 || true
sleep 10  # the agent's scale-out rollout: give the new allocation a moment
grep -h '"event": "scaled"' "$AGENT_LOG" | sed 's/^/  /' | tail -n 5 || true
after=$(running_allocs triton-gpu-l4)
if [ "$before" != "$after" ]; then
  echo "the agent scaled triton-gpu-l4: ${before} -> ${after} allocations (the other pools were left alone)"
else
  echo "triton-gpu-l4 stayed at ${after}: this machine served the load within the policy's target (see ${AGENT_LOG})"
fi
kill "$AGENT_PID" 2>/dev/null || true
wait "$AGENT_PID" 2>/dev/null || true
trap - EXIT
nomad-triton status

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
