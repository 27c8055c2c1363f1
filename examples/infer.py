"""Send one inference request to a model served by a nomad-triton job, over HTTP with tritonclient.

The Triton address comes from Nomad's native service registry (the job registers its http port
as a `provider = "nomad"` service), so this works the same against devcluster and a real cluster:

    python examples/infer.py --service triton-cpu --model mlp
    python examples/infer.py --url 127.0.0.1:8000 --model mlp

Inputs are built from the model's own metadata (zeros-then-ones of the declared shape), so it
works for any fixed-shape model. Exit 0 on a successful inference, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from nomad_triton.nomad.client import NomadClient
from nomad_triton.nomad.errors import NomadError


def service_url(name: str) -> str:
    """First registered address of a Nomad native service, as host:port (no scheme)."""
    regs = NomadClient.from_env().service(name)
    if not regs:
        raise SystemExit(f"infer: no instances of service {name!r} are registered in Nomad")
    return f"{regs[0]['Address']}:{regs[0]['Port']}"


def infer(url: str, model: str, batch: int) -> dict[str, np.ndarray]:
    client = httpclient.InferenceServerClient(url=url, connection_timeout=5.0, network_timeout=10.0)
    meta = client.get_model_metadata(model)
    inputs = []
    for spec in meta["inputs"]:
        shape = [batch if d == -1 else d for d in spec["shape"]]
        data = np.linspace(0, 1, num=int(np.prod(shape)), dtype=triton_to_np_dtype(spec["datatype"]))
        tensor = httpclient.InferInput(spec["name"], shape, spec["datatype"])
        tensor.set_data_from_numpy(data.reshape(shape))
        inputs.append(tensor)
    result = client.infer(model, inputs)
    return {out["name"]: result.as_numpy(out["name"]) for out in meta["outputs"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--service", help="Nomad native service name of the job's http port")
    where.add_argument("--url", help="Triton HTTP address host:port")
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    try:
        url = args.url or service_url(args.service)
        outputs = infer(url, args.model, args.batch)
    except (InferenceServerException, NomadError, OSError) as exc:
        print(f"infer: {args.model}: {exc}", file=sys.stderr)
        return 1
    for name, value in outputs.items():
        print(f"{args.model} @ {url}: {name} shape={list(value.shape)} first row={np.round(value[0], 4).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
