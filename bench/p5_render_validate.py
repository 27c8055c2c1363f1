"""P5: load + validate + render 1,000 varied deployment specs; compare with a per-spec jinja environment.

Why: `render`/`validate` run in CI for every spec of a fleet and inside `deploy` on every attempt;
the target is <= 2 s for 1,000 specs. The naive baseline (building the sandboxed environment and
compiling the templates again for each spec, as a template-per-call helper would) shows what the
process-wide cached environment buys. The python-hcl2 parse-back that `validate` adds is timed
separately, since it dominates and is not part of rendering.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

from nomad_triton.render import environment, make_environment, render_job, validate_local
from nomad_triton.spec import load_spec

N_SPECS = 1000
BASELINE_SAMPLE = 200  # the naive baseline is timed on a sample to bound the run time
PARSE_SAMPLE = 100
TARGET_S = 2.0


def spec_text(i: int, rng: random.Random) -> str:
    """One varied spec: driver, GPUs, rollout, scaling, model lists and escaped values all vary."""
    models = [f"m{j}" for j in range(rng.randint(1, 6))]
    docker = rng.random() < 0.5
    lines = [f'name = "svc-{i}"', f"count = {rng.randint(1, 4)}", f'datacenters = ["dc{i % 3}"]']
    if docker:
        lines += [
            "[driver]",
            'type = "docker"',
            f'image = "registry.local/triton:{i}"',
            f'network_mode = "{rng.choice(["host", "bridge"])}"',
        ]
        source = rng.choice(
            ['host_volume = "models"', 'artifact = "https://example.com/m.tgz"', 'path = "/models"']
        )
    else:
        lines += ["[driver]", 'type = "raw_exec"', 'command = "/usr/local/bin/nomad-triton"']
        source = 'path = "/srv/models"'
    lines += ["[model_repository]", source, f"models = {models!r}".replace("'", '"')]
    if docker and rng.random() < 0.7:
        lines += [
            "[gpus]",
            f"count = {rng.randint(1, 4)}",
            'min_memory = "16 GiB"',
            'model = "A100|H100"',
            'preferred_model = "H100"',
        ]
    canary = rng.randint(0, 2)
    lines += [
        "[rollout]",
        f"canary = {canary}",
        f"auto_promote = {str(canary > 0).lower()}",
        f'min_healthy_time = "{rng.randint(1, 30)}s"',
    ]
    lines += [
        "[scaling]",
        "enabled = true",
        "min = 1",
        "max = 8",
        "[scaling.policy]",
        f"latency_slo_ms = {rng.randint(50, 500)}",
    ]
    lines += ["[env]", f'TRICKY = "quote \\" dollar ${{x}} %{{y}} {i}"', "[meta]", f'"build.id" = "{i}"']
    return "\n".join(lines) + "\n"


def main() -> int:
    rng = random.Random(5)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(N_SPECS):
            path = Path(tmp) / f"spec-{i}.toml"
            path.write_text(spec_text(i, rng))
            paths.append(path)

        environment()  # warm: compile the templates once, as a long-lived CLI or controller would
        t0 = time.perf_counter()
        specs = [load_spec(p) for p in paths]
        t1 = time.perf_counter()
        texts = [render_job(s) for s in specs]
        t2 = time.perf_counter()
        load_s, render_s, total_s = t1 - t0, t2 - t1, t2 - t0

        sample = specs[:BASELINE_SAMPLE]
        t3 = time.perf_counter()
        naive = [render_job(s, make_environment()) for s in sample]
        naive_per_spec = (time.perf_counter() - t3) / len(sample)
        if naive != texts[: len(sample)]:
            print("baseline rendered different text: comparison invalid", file=sys.stderr)
            return 1

        t4 = time.perf_counter()
        problems = [p for s in specs[:PARSE_SAMPLE] for p in validate_local(s)]
        parse_per_spec = (time.perf_counter() - t4) / PARSE_SAMPLE
        if problems:
            print(f"validate_local found problems: {problems[:3]}", file=sys.stderr)
            return 1

    per_spec = total_s / N_SPECS
    render_per_spec = render_s / N_SPECS
    avg_bytes = sum(map(len, texts)) / N_SPECS
    print(f"specs                              : {N_SPECS} (avg {avg_bytes:.0f} bytes of HCL each)")
    print(f"load+validate (pydantic)           : {load_s:.3f} s total, {1e3 * load_s / N_SPECS:.3f} ms/spec")
    print(f"render (cached sandboxed env)      : {render_s:.3f} s total, {1e3 * render_per_spec:.3f} ms/spec")
    print(
        f"load+validate+render               : {total_s:.3f} s total, {1e3 * per_spec:.3f} ms/spec "
        f"(target <= {TARGET_S:.1f} s: {'met' if total_s <= TARGET_S else 'MISSED'})"
    )
    print(
        f"naive render (new env per spec)    : {1e3 * naive_per_spec:.3f} ms/spec (sample of {len(sample)})"
    )
    print(f"ratio naive/cached render          : {naive_per_spec / render_per_spec:.1f}x")
    print(
        f"local validate parse-back (hcl2)   : {1e3 * parse_per_spec:.1f} ms/spec (sample of {PARSE_SAMPLE}; "
        f"{parse_per_spec / per_spec:.1f}x load+validate+render)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
