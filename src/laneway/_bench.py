"""``python -m laneway bench``: threads against processes on this machine.

Three probe tasks, each run serially, on threads, on processes and the way laneway
chooses with no hint, side by side in one run (variants round-robin, medians):

* **cpu**: a pure-Python loop (holds the GIL): processes should win, threads not;
* **native**: SHA-256 of a few MB made in the task (hashlib releases the GIL): threads
  should win without pickling anything;
* **io**: ``time.sleep`` (waiting): threads overlap every wait, processes only a few.

Each CPU-type item is calibrated to about ``ITEM_S`` here, so the table reads the same on
slow and fast machines.  The functions are module level: process workers import them.
Only the command line imports this module.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Probe", "Result", "main", "measure", "plot", "render"]

ITEM_S = 0.010
"""Target seconds of one CPU or native probe item (``--quick``: a fifth of it)."""

VARIANTS = ("serial", "threads", "processes", "laneway")


def spin(n: int) -> int:
    """Pure-Python computing: holds the GIL."""
    s = 0
    for i in range(n):
        s += i * i % 7
    return s


def digest(size: int) -> str:
    """SHA-256 of ``size`` bytes made in the task: hashlib releases the GIL."""
    return hashlib.sha256(bytes(size)).hexdigest()


def wait(seconds: float) -> float:
    """Waiting: sleeps, using no CPU."""
    time.sleep(seconds)
    return seconds


@dataclass(frozen=True)
class Probe:
    """One probe task: its function, its items and the thread count it gets."""

    name: str
    what: str
    fn: Callable[[Any], Any]
    items: list[Any]
    threads: int


@dataclass(frozen=True)
class Result:
    """A probe's median seconds per variant, and laneway's own choice."""

    probe: Probe
    seconds: dict[str, float]
    choice: str

    def speedup(self, variant: str) -> float:
        """Serial time over ``variant``'s time."""
        return self.seconds["serial"] / self.seconds[variant]


def _calibrate(fn: Callable[[Any], Any], start: int, seconds: float) -> int:
    """The argument of ``fn`` (a size that scales its time) that takes ``seconds``."""
    best = min(_timed(lambda: fn(start)) for _ in range(3))
    return max(1, int(start * seconds / max(best, 1e-6)))


def _timed(call: Callable[[], Any]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def probes(cpus: int, quick: bool) -> list[Probe]:
    """The three probes, sized for ``cpus`` CPUs (``quick``: smaller)."""
    item_s = ITEM_S / 5 if quick else ITEM_S
    count = 4 * cpus if quick else 8 * cpus
    waits = 32 if quick else 64
    return [
        Probe("cpu", "pure-Python loop", spin, [_calibrate(spin, 20_000, item_s)] * count,
              cpus),
        Probe("native", "hashlib.sha256 (releases the GIL)", digest,
              [_calibrate(digest, 1 << 20, item_s)] * count, cpus),
        Probe("io", "time.sleep", wait, [item_s] * waits, waits),
    ]


def measure(probe: Probe, cpus: int, reps: int) -> Result:
    """Time ``probe`` under every variant, round-robin, ``reps`` times; medians."""
    from . import _profile
    from ._api import parallel_map
    from ._run import last_plan

    items = probe.items
    runs: dict[str, Callable[[], Any]] = {
        "serial": lambda: [probe.fn(item) for item in items],
        "threads": lambda: parallel_map(probe.fn, items, backend="thread",
                                        workers=probe.threads),
        "processes": lambda: parallel_map(probe.fn, items, backend="process", workers=cpus),
        "laneway": lambda: parallel_map(probe.fn, items),
    }
    parallel_map(probe.fn, items[:cpus], backend="process", workers=cpus)  # warm workers
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    choice = "?"
    for rep in range(reps):
        order = VARIANTS[rep % len(VARIANTS):] + VARIANTS[:rep % len(VARIANTS)]
        for name in order:
            if name == "laneway":
                _profile.forget(probe.fn)  # every laneway figure includes its measuring
            seconds[name].append(_timed(runs[name]))
            if name == "laneway":
                plan = last_plan()
                choice = plan.backend if plan is not None else "?"
    return Result(probe, {name: statistics.median(values)
                          for name, values in seconds.items()}, choice)


def render(results: Sequence[Result], cpus: int, reps: int) -> str:
    """The results as a Markdown table, with a line on how they were taken."""
    lines = [f"laneway bench: {cpus} CPUs available, medians of {reps}, variants "
             f"round-robin; speedup = serial time / variant time "
             f"(ceiling {cpus}.0x for computing).", "",
             "| probe | task | items | serial | threads | processes | laneway (choice) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for result in results:
        cells = [f"{result.seconds['serial'] * 1e3:.0f} ms"]
        for name in VARIANTS[1:]:
            cells.append(f"{result.seconds[name] * 1e3:.0f} ms "
                         f"({result.speedup(name):.2f}x)")
        cells[-1] += f" {result.choice}"
        probe = result.probe
        lines.append(f"| {probe.name} | {probe.what} | {len(probe.items)} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: Sequence[Result], path: str) -> None:
    """Save the speedups as a grouped bar chart (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    width = 0.25
    names = [result.probe.name for result in results]
    for k, variant in enumerate(VARIANTS[1:]):
        bars = axes.bar([i + (k - 1) * width for i in range(len(results))],
                        [result.speedup(variant) for result in results], width,
                        label=variant)
        axes.bar_label(bars, fmt="%.2fx", fontsize=8)
    axes.set_yscale("log")  # waiting work gains tens of times, computing at most cpus
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.set_xticks(range(len(results)), names)
    axes.set_ylabel("speedup over serial")
    axes.set_title("laneway bench: threads vs processes on this machine")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(quick: bool, reps: int | None, plot_path: str | None) -> int:
    """Run the probes, print the table, optionally plot it; the exit code."""
    from ._cpus import available_cpus

    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: --plot needs matplotlib: pip install 'laneway[plot]'",
                  file=sys.stderr)
            return 2
    cpus = available_cpus()
    reps = reps if reps is not None else (1 if quick else 3)
    results = [measure(probe, cpus, reps) for probe in probes(cpus, quick)]
    print(render(results, cpus, reps))
    if plot_path is not None:
        plot(results, plot_path)
        print(f"\nplot saved to {plot_path}")
    return 0
