"""Helpers shared by the benchmark scripts (run as ``python benchmarks/bench_*.py``)."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from typing import Any

# what else may load the 2 shared cores while a benchmark measures
HEAVY = "bench_|efficientbert run|cli_run run"


def wait_for_others(me: str, poll: float = 60.0) -> None:
    """Block while another benchmark or ``efficientbert run`` runs (lines naming ``me``,
    this script, are ignored), so that timings are not taken on shared cores."""
    mine = {os.getpid(), os.getppid()}
    while True:
        out = subprocess.run(["pgrep", "-af", HEAVY], capture_output=True,
                             text=True).stdout.splitlines()
        others = [ln for ln in out if ln and int(ln.split()[0]) not in mine
                  and "pgrep" not in ln and me not in ln]
        if not others:
            return
        print(f"waiting for: {others}", flush=True)
        time.sleep(poll)


def summary(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation, min and max of ``values`` (kept too)."""
    return {"values": values, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}
