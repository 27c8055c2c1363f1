"""`python -m nomad_triton.observe.examples` (`make examples`): regenerate the committed examples.

examples/prometheus/* and examples/grafana/nomad-triton.json are generated, never hand-edited;
tests/unit/observe/test_examples.py checks that what is committed equals what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path


def generated() -> dict[str, str]:
    """Repository-relative path -> file text."""
    from nomad_triton.observe.autoscaler_job import autoscaler_job_hcl
    from nomad_triton.observe.dashboard import dashboard_json
    from nomad_triton.observe.prometheus_config import example_files

    out = {f"examples/prometheus/{name}": text for name, text in example_files().items()}
    out["examples/prometheus/autoscaler.nomad.hcl"] = autoscaler_job_hcl("triton-cpu")
    out["examples/grafana/nomad-triton.json"] = dashboard_json()
    return out


def main(root: Path) -> None:
    for rel, text in generated().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {rel}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
