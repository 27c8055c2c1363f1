"""Entry point: `python -m nomad_triton.devcluster --config devcluster.toml --port 0 --state-dir DIR`."""

import sys

from .server import main

sys.exit(main())
