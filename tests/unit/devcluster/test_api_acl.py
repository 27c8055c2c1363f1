"""ACL decisions (pure): management vs client tokens, shorthands, globs, variables, deny wins."""

from __future__ import annotations

import pytest

from nomad_triton.devcluster.api.acl import Authorizer
from nomad_triton.devcluster.config import parse_config
from nomad_triton.devcluster.errors import ApiError

CFG = {
    "server": {"acl": True, "namespaces": ["prod-a", "prod-b"]},
    "acl": {
        "policies": {
            "deployer": {
                "namespace": {
                    "default": {"capabilities": ["read-job", "submit-job", "scale-job", "read-logs"],
                                "variables": {"nomad-triton/*": ["read", "write"]}},
                },
                "node": "read",
            },
            "viewer": {"namespace": {"prod-*": {"policy": "read"}}},
            "blocker": {"namespace": {"prod-b": {"policy": "deny"}}},
        },
    },
}


@pytest.fixture()
def authz() -> Authorizer:
    return Authorizer(parse_config(CFG))


def tok(*policies: str, typ: str = "client") -> dict:
    return {"Type": typ, "Policies": list(policies)}


def test_disabled_acl_allows_everything() -> None:
    a = Authorizer(parse_config({}))
    assert a.allow_namespace(None, "default", "submit-job")
    assert a.allow_coarse(None, "operator", "write")


def test_anonymous_is_denied_and_management_allowed(authz: Authorizer) -> None:
    assert not authz.allow_namespace(None, "default", "read-job")
    with pytest.raises(ApiError) as err:
        authz.require_namespace(None, "default", "read-job")
    assert (err.value.status, err.value.message) == (403, "Permission denied")
    assert authz.allow_namespace(tok(typ="management"), "prod-b", "submit-job")
    authz.require_management(tok(typ="management"))
    with pytest.raises(ApiError):
        authz.require_management(tok("deployer"))


def test_capabilities_are_scoped_to_namespace(authz: Authorizer) -> None:
    t = tok("deployer")
    assert authz.allow_namespace(t, "default", "scale-job")
    assert not authz.allow_namespace(t, "default", "alloc-exec")
    assert not authz.allow_namespace(t, "prod-a", "read-job")


def test_policy_shorthand_and_glob(authz: Authorizer) -> None:
    t = tok("viewer")
    assert authz.allow_namespace(t, "prod-a", "read-job")
    assert authz.allow_namespace(t, "prod-a", "list-jobs")
    assert not authz.allow_namespace(t, "prod-a", "submit-job")
    assert not authz.allow_namespace(t, "default", "read-job")


def test_explicit_deny_wins_over_other_policies(authz: Authorizer) -> None:
    assert authz.allow_namespace(tok("viewer"), "prod-b", "read-job")
    assert not authz.allow_namespace(tok("viewer", "blocker"), "prod-b", "read-job")


def test_variable_paths(authz: Authorizer) -> None:
    t = tok("deployer")
    assert authz.allow_variable(t, "default", "nomad-triton/autoscaler/lock", "write")
    assert not authz.allow_variable(t, "default", "nomad-triton/x", "destroy")
    assert not authz.allow_variable(t, "default", "other/x", "read")
    assert not authz.allow_variable(tok("viewer"), "prod-a", "nomad-triton/x", "read")


def test_coarse_rules(authz: Authorizer) -> None:
    assert authz.allow_coarse(tok("deployer"), "node", "read")
    assert not authz.allow_coarse(tok("deployer"), "node", "write")
    assert not authz.allow_coarse(tok("viewer"), "node", "read")
