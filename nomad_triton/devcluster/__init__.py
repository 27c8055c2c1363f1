"""devcluster: a single-machine cluster that speaks Nomad's documented HTTP API.

It exists because a real Nomad agent cannot be installed where nomad-triton is developed and
tested; it is the substrate of the end-to-end tests and the embedded default of `make demo`.
Fidelity to the Nomad API (paths, JSON field names, status codes, error texts, blocking-query and
event-stream semantics) is the point: clients written for Nomad must work against it unchanged.

Architecture (mirrors Nomad's own server/client split, all on one asyncio loop):
- store.py      state tables of Nomad-API-shaped dicts, one raft-like index, events, waiters
- hclparse.py   HCL2 job text -> API Job JSON (python-hcl2), canonicalize, validate
- api/ (or api.py) Starlette routes: the HTTP API. Handlers only read the store and write
                desired state (jobs, evals, desired-status changes); they never run processes.
- scheduler.py  pure placement/reconcile: job + nodes + allocs -> placements, stops, failures
- runtime.py    the "servers + clients": eval processing, raw_exec driver, checks, alloc health,
                deployments (canary, promote, auto-revert), restart/reschedule, blocked evals
- config.py     devcluster.toml (listen address, ACLs, nodes with devices)

The toolkit core (nomad_triton.* outside this package) never imports devcluster.
"""
