"""Timing helpers shared by bench_pipeline, bench_kernels, bench_student_step and
bench_candidate: interleaved rounds, paired ratios, and what the machine was doing.

Every results file these scripts write carries :func:`machine_meta` (threads, CPU
capability, load average, idle share before and after) and a ``load`` label, so a figure
taken while other jobs ran on the cores says so.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

QUIET_IDLE = 90.0  # percent of machine CPU idle, before and after, to call a run quiet


def cpu_idle_percent(seconds: float = 2.0) -> float | None:
    """Machine-wide idle CPU share over ``seconds`` (Linux ``/proc/stat``), else None."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 100.0 * (idle1 - idle0) / max(1, total1 - total0)


def machine_meta(torch_too: bool = True) -> dict[str, Any]:
    """Python, torch, thread counts, CPU capability, cores and load average now."""
    meta: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                            "cores": os.cpu_count()}
    try:
        meta["loadavg_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        meta["loadavg_1_5_15"] = None
    if torch_too:
        import torch

        meta.update(torch=torch.__version__, threads=torch.get_num_threads(),
                    interop_threads=torch.get_num_interop_threads(),
                    cpu_capability=torch.backends.cpu.get_cpu_capability())
    return meta


def load_label(idle: tuple[float | None, float | None]) -> str:
    """``"quiet"`` when the machine was at least :data:`QUIET_IDLE` % idle before and after
    the run, else a label saying it was measured under load (and how loaded)."""
    known = [v for v in idle if v is not None]
    if not known:
        return "unknown load (no /proc/stat)"
    if min(known) >= QUIET_IDLE:
        return "quiet"
    return (f"MEASURED UNDER LOAD (machine CPU idle before/after: "
            f"{'/'.join('?' if v is None else f'{v:.0f}%' for v in idle)}); re-run on a "
            "quiet machine")


def interleaved(fns: Mapping[str, Callable[[], Any]], *, rounds: int, calls: int,
                warmup: int = 2, clock: Callable[[], float] = time.perf_counter
                ) -> dict[str, list[float]]:
    """Per variant, the median seconds of ``calls`` calls in each of ``rounds`` rounds; the
    variants are called round-robin, call by call, so load from other processes hits
    them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        samples: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(calls):
            for name, fn in fns.items():
                t0 = clock()
                fn()
                samples[name].append(clock() - t0)
        for name, s in samples.items():
            out[name].append(statistics.median(s))
    return out


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of ``a / b`` (both timed in the same round, so drifts of the
    machine's speed cancel)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))
