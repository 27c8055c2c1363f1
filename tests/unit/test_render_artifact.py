"""model_repository.artifact (+ checksum) renders as a Nomad artifact block that Nomad's HCL rules parse
into GetterSource/GetterOptions; https, s3:: and gcs:: sources alike (a real client fetches s3/gcs)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nomad_triton.devcluster.hclparse import parse_job_hcl
from nomad_triton.render import render_job
from nomad_triton.spec import DeploymentSpec

SHA = "sha256:" + "ab" * 32


def _spec(repo: dict[str, Any]) -> DeploymentSpec:
    return DeploymentSpec.model_validate({
        "name": "t", "driver": {"type": "raw_exec", "command": "/bin/x"},
        "model_repository": {"models": ["linear_onnx"], **repo},
    })


def _artifacts(spec: DeploymentSpec) -> list[dict[str, Any]]:
    job = parse_job_hcl(render_job(spec), canonicalize=True)
    return job["TaskGroups"][0]["Tasks"][0]["Artifacts"]


@pytest.mark.parametrize(
    "source",
    [
        "https://models.example.com/triton-repo.tar.gz",
        "s3::https://s3.amazonaws.com/team-models/triton-repo.tar.gz",
        "gcs::https://www.googleapis.com/storage/v1/team-models/triton-repo.tar.gz",
    ],
)
def test_artifact_sources_render_with_their_checksum(source: str) -> None:
    [artifact] = _artifacts(_spec({"artifact": source, "checksum": SHA}))
    assert artifact["GetterSource"] == source
    assert artifact["RelativeDest"] == "local/models"
    assert artifact["GetterOptions"] == {"checksum": SHA}


def test_no_checksum_no_options_block() -> None:
    [artifact] = _artifacts(_spec({"artifact": "https://h/m.tgz"}))
    assert not artifact.get("GetterOptions")


@pytest.mark.parametrize(
    ("repo", "field", "text"),
    [
        ({"artifact": "https://h/m.tgz", "checksum": "sha256:abc"}, "checksum", "is not 'sha256:<64 hex digits>'"),
        ({"artifact": "https://h/m.tgz", "checksum": "crc32:" + "0" * 8}, "checksum", "is not 'sha256:"),
        ({"path": "/m", "checksum": SHA}, "checksum", "only applies to an artifact source"),
    ],
)
def test_bad_checksum_is_refused(repo: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(ValidationError) as err:
        _spec(repo)
    assert text in str(err.value) and field in str(err.value)
