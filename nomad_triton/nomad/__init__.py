"""Talking to Nomad: the client facade (client.py), its errors, the deployment watcher and failure inspector.

Every rollout command follows its registration with `rollout.follow` (the deployment watcher plus
the one "does what I asked for really run healthy" rule, auto-revert included).

Import `NomadClient` from here; construct it with `NomadClient.from_env(**connection_flag_overrides)`.
"""

from nomad_triton.nomad.client import NomadClient, PlanResult, RegisterResult
from nomad_triton.nomad.settings import ConnectionSettings

__all__ = ["ConnectionSettings", "NomadClient", "PlanResult", "RegisterResult"]
