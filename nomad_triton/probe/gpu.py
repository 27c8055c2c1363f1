"""Local GPU utilisation and memory through NVML (nvidia-ml-py).

Most of our machines (CI, laptops, CPU pools) have no NVIDIA driver. That is a normal state, not
an error: `read_gpus` then returns a GpuReport with `available=False` and the reason, never raises.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pynvml


@dataclass(frozen=True)
class GpuStat:
    index: int
    name: str
    utilization: float  # 0..1, like Triton's nv_gpu_utilization
    memory_used_bytes: int
    memory_total_bytes: int


@dataclass(frozen=True)
class GpuReport:
    available: bool
    gpus: list[GpuStat] = field(default_factory=list)
    reason: str | None = None

    def summary(self) -> str:
        """One human line: 'gpus: 1 (NVIDIA H100 80GB HBM3 0/80 GiB)' or 'gpus: none (NVML unavailable: ...)'."""
        if not self.available:
            return f"gpus: none ({self.reason})"
        parts = [
            f"{g.name} {g.memory_used_bytes / 2**30:.0f}/{g.memory_total_bytes / 2**30:.0f} GiB" for g in self.gpus
        ]
        return f"gpus: {len(self.gpus)} ({', '.join(parts) or 'no devices visible'})"

    def to_dict(self) -> dict[str, object]:
        return {"available": self.available, "reason": self.reason, "gpus": [asdict(g) for g in self.gpus]}


def read_gpus() -> GpuReport:
    """Snapshot every visible GPU; `available=False` with a reason when NVML cannot be used."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:  # no driver / no libnvidia-ml.so
        return GpuReport(available=False, reason=f"NVML unavailable: {exc}")
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            gpus.append(
                GpuStat(
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    utilization=float(util.gpu) / 100.0,
                    memory_used_bytes=int(mem.used),
                    memory_total_bytes=int(mem.total),
                )
            )
        return GpuReport(available=True, gpus=gpus)
    except pynvml.NVMLError as exc:
        return GpuReport(available=False, reason=f"NVML error: {exc}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
