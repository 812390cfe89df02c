"""laneway: parallel map that runs each task where it runs fastest, and says why.

>>> import laneway
>>> @laneway.cpu_bound
... def score(n: int) -> int:
...     return sum(i * i for i in range(n))
>>> laneway.parallel_map(score, [10, 20, 30], backend="serial")
[285, 2470, 8555]

The public names are those in ``__all__``; every module with a leading underscore is
private.  See docs/reference.md.

The names are imported on first use (PEP 562), so that a process worker, which imports
only the small part of laneway it runs, starts quickly.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # (no typing at run time: see _backends.process.worker)
if TYPE_CHECKING:
    from typing import Any

    from ._aio import amap, arun_concurrently
    from ._api import imap, parallel_map
    from ._classify import Profile, classify
    from ._concurrent import Task, run_concurrently, task
    from ._cpus import available_cpus
    from ._errors import LanewayError, TaskTimeoutError, WorkerCrashedError
    from ._executor import Executor
    from ._hints import cpu_bound, io_bound
    from ._router import Plan
    from ._run import last_plan
    from ._shared import SharedCounter, SharedDict, SharedValue

__all__ = [
    "Executor",
    "LanewayError",
    "Plan",
    "Profile",
    "SharedCounter",
    "SharedDict",
    "SharedValue",
    "Task",
    "TaskTimeoutError",
    "WorkerCrashedError",
    "amap",
    "arun_concurrently",
    "available_cpus",
    "classify",
    "cpu_bound",
    "imap",
    "io_bound",
    "last_plan",
    "parallel_map",
    "run_concurrently",
    "task",
]

__version__ = "0.1.0.dev0"

_HOMES = {
    "Executor": "._executor",
    "LanewayError": "._errors",
    "Plan": "._router",
    "Profile": "._classify",
    "SharedCounter": "._shared",
    "SharedDict": "._shared",
    "SharedValue": "._shared",
    "Task": "._concurrent",
    "run_concurrently": "._concurrent",
    "task": "._concurrent",
    "classify": "._classify",
    "last_plan": "._run",
    "TaskTimeoutError": "._errors",
    "WorkerCrashedError": "._errors",
    "amap": "._aio",
    "arun_concurrently": "._aio",
    "available_cpus": "._cpus",
    "cpu_bound": "._hints",
    "imap": "._api",
    "io_bound": "._hints",
    "parallel_map": "._api",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        msg = f"module 'laneway' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
