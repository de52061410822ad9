"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """e.g. 'Intel(R) Xeon(R) Processor, 2 logical cores, ISA AVX512'."""
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, ISA {torch.backends.cpu.get_cpu_capability()}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other processes inflate wall-clock timings)."""
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"
