"""Talking to Nomad: the client facade (client.py), its errors, the deployment watcher and failure inspector.

Import `NomadClient` from here; construct it with `NomadClient.from_env(**connection_flag_overrides)`.
"""

from nomad_triton.nomad.client import NomadClient, PlanResult, RegisterResult
from nomad_triton.nomad.settings import ConnectionSettings

__all__ = ["ConnectionSettings", "NomadClient", "PlanResult", "RegisterResult"]
