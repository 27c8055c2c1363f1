"""Upper and lower bounds for every number in the spec, in one place.

Why: pydantic alone accepts `count = 1e20` (an integral float) and renders it; Nomad then either
rejects the job with an overflow message or, worse, tries to place it. Where Nomad enforces a bound
(ports 1-65535, memory >= 10 MB, priority 1-100, affinity weight -100..100) we use Nomad's; where it
only has Go's int64 we use a tighter limit that no real deployment reaches, so a typo or a unit
mix-up (MiB vs bytes) is caught before anything is submitted.
"""

from __future__ import annotations

from datetime import timedelta

MAX_COUNT = 10_000  # allocations per group, canaries, scaling bounds and steps: beyond any real cluster
MAX_CPU_MHZ = 1_000_000  # 1 THz of CPU shares: ~250 cores at 4 GHz
MIN_MEMORY_MB = 10  # Nomad's own minimum
MAX_MEMORY_MB = 16 * 1024 * 1024  # 16 TiB, in MiB
MAX_GPUS = 64  # devices per allocation
MAX_ATTEMPTS = 1_000  # restart / reschedule attempts
MAX_INSTANCES = 1_024  # model instances per allocation
MAX_RATIO = 1_000.0  # queue/compute ratio targets
MAX_PENDING = 1_000_000.0  # pending requests per replica
MAX_LATENCY_MS = 3_600_000.0  # one hour
MAX_FAST_FACTOR = 100.0
MAX_DURATION = timedelta(days=365)  # rollout deadlines, cooldowns, restart/reschedule windows
MAX_DURATION_TEXT = "8760h"
