"""Measurement helpers shared by every benchmark: interleaved timing, peak memory, ratio tables.

Timings interleave the compared functions round by round (A, B, A, B, ...) and report medians, so that drift in
machine load affects both sides alike. Peak memory is measured per call in a fresh process on CPU (peak RSS above
the process's baseline) and with torch.cuda.max_memory_allocated on GPU.
"""

from __future__ import annotations

import importlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def inference(fn: Callable[[], object]) -> Callable[[], None]:
    """`fn` run under torch.inference_mode, for timing."""
    def run() -> None:
        with torch.inference_mode():
            fn()
    return run


def fixture_recorder(name: str) -> ModuleType:
    """tests/fixtures/<name>.py, the script that records a parity fixture from an official checkout; its
    `import_official(checkout)` is how the benchmarks load the official code too."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
    return importlib.import_module(name)


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2,
                      device: str = "cpu") -> dict[str, float]:
    """Median seconds per call of each function, measured round-robin."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            samples[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in samples.items()}


_MEMORY_PROBE = """
import json, gc, torch
{code}
fn = setup()
gc.collect()
if {device!r} == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    fn(); torch.cuda.synchronize()
    print(json.dumps((torch.cuda.max_memory_allocated() - base) / 2**20))
else:
    def high_water_kb():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current resident size
    base = high_water_kb()
    fn()
    print(json.dumps((high_water_kb() - base) / 1024))
"""


def peak_memory_mb(code: str, device: str = "cpu") -> float:
    """Peak memory (MiB) of one call, above the level after set-up, measured in a fresh process.

    `code` is Python source defining `setup()`, which builds everything and returns the callable to measure.
    """
    script = _MEMORY_PROBE.format(code=code, device=device)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def table(rows: list[dict[str, object]]) -> str:
    """A Markdown table of `rows` (dicts sharing keys)."""
    if not rows:
        return ""
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)
