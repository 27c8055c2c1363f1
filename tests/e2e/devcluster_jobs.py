"""Job texts and process helpers for the devcluster e2e tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PY = sys.executable


def web_job(job_id: str, marker: str, count: int = 1, *, min_healthy: str = "1s", extra_group: str = "") -> str:
    """A raw_exec Python HTTP server on its dynamic port with a Nomad-native http check.

    `marker` is a unique directory name passed to the server so tests can count its processes.
    """
    return f'''
job "{job_id}" {{
  datacenters = ["dc1"]
  type = "service"

  group "web" {{
    count = {count}
    network {{
      port "http" {{}}
    }}
    scaling {{
      min = 0
      max = 5
    }}
    update {{
      max_parallel      = 2
      min_healthy_time  = "{min_healthy}"
      healthy_deadline  = "60s"
      progress_deadline = "120s"
    }}
    {extra_group}
    service {{
      name     = "{job_id}-http"
      port     = "http"
      provider = "nomad"
      check {{
        type     = "http"
        path     = "/"
        interval = "1s"
        timeout  = "2s"
      }}
    }}
    task "server" {{
      driver = "raw_exec"
      config {{
        command = "{PY}"
        args    = ["-m", "http.server", "${{NOMAD_PORT_http}}", "--bind", "127.0.0.1", "--directory", "{marker}"]
      }}
      resources {{
        cpu    = 100
        memory = 64
      }}
    }}
  }}
}}
'''


def sleep_job(job_id: str, count: int = 1, seconds: int = 300, *, extra_task: str = "", node_pool: str = "") -> str:
    pool = f'node_pool = "{node_pool}"' if node_pool else ""
    return f'''
job "{job_id}" {{
  datacenters = ["dc1"]
  {pool}
  group "main" {{
    count = {count}
    task "sleep" {{
      driver = "raw_exec"
      config {{
        command = "sleep"
        args    = ["{seconds}"]
      }}
      resources {{
        cpu    = 20
        memory = 16
        {extra_task}
      }}
    }}
  }}
}}
'''


def pids_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z" and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found
