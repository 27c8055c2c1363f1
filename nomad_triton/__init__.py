"""nomad-triton: run Triton inference servers on HashiCorp Nomad.

The pipeline is visible in the subpackages: spec -> render -> nomad -> watch -> probe -> autoscale.
`devcluster` is a separate Nomad-API-compatible local cluster and is never imported from the core.
"""

__version__ = "0.1.0"
