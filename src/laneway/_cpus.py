"""How many CPUs this process may really use.

``os.cpu_count()`` counts the machine, not what the process is allowed to use.
:func:`available_cpus` takes the minimum over every limit we know how to read:

* **Affinity / cpuset** (``taskset``, ``docker --cpuset-cpus``, ``cpuset.cpus``):
  ``os.process_cpu_count()`` on 3.13+ (which also honours ``PYTHON_CPU_COUNT`` and
  ``-X cpu_count``), else ``len(os.sched_getaffinity(0))``, else ``os.cpu_count()``,
  which may return ``None`` (-> 1).
* **cgroup v2 CPU quota** (``cpu.max``, "<quota> <period>" or "max <period>"). The
  process's own cgroup is read from ``/proc/self/cgroup`` (line ``0::/path``), not
  assumed to be the mount root: loky only reads ``/sys/fs/cgroup/cpu.max`` and so
  misses quotas on nested systemd/Kubernetes cgroups (loky#634). A child cgroup
  saying ``max`` does not lift its parent's quota, so every ancestor up to the mount
  root is read and the minimum wins. In containers ``/proc/self/cgroup`` usually
  says ``0::/`` and the namespace root *is* the container's cgroup, so the mount
  root's ``cpu.max`` is always read.
* **cgroup v1 CFS quota** (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, quota -1 =
  unlimited) on the ``cpu`` controller's hierarchy, same ancestor walk.
* **Where the hierarchies are mounted** comes from ``/proc/self/mountinfo``: hybrid
  systems mount v2 at ``/sys/fs/cgroup/unified``, and v1 controllers may be
  co-mounted (``cpu,cpuacct``). The mount's root field is honoured (old Docker
  bind-mounts ``/docker/<id>`` as the mount root) and octal escapes (``\\040``)
  are decoded. Without mountinfo we fall back to the usual ``/sys/fs/cgroup`` paths.
  A cgroup path with ``..`` (process outside its cgroup namespace) cannot be mapped,
  so only the mount root is read.
* **The user's cap**: ``LANEWAY_MAX_WORKERS`` (positive int). It can only lower the
  result. A bad value raises ``ValueError`` rather than being silently ignored.
* **Robustness**: missing, unreadable (``PermissionError`` and other ``OSError``),
  empty (loky#478 crashed on an empty ``cpu.max``), ``max``, garbage, zero or
  negative quota/period all mean "no limit from this source", never an exception.
* Quotas are rounded **up** (1.5 CPUs of quota -> 2 workers): the quota is CPU
  time, so a fractional CPU is still usable. The result is never below 1.
* Nothing is cached: limits change at run time (``docker update``, ``systemctl
  set-property``) and the cost is a few tiny file reads.
* Not limits: ``cpu.weight`` / ``cpu.shares`` are relative priorities, not caps.
  ``cpuset.cpus`` needs no reading: the kernel already applies it to the affinity.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import NamedTuple

__all__ = ["available_cpus"]

ENV_VAR = "LANEWAY_MAX_WORKERS"

_INT_RE = re.compile(r"[+-]?[0-9]+")
_OCTAL_ESCAPE_RE = re.compile(r"\\([0-7]{3})")


class _Mount(NamedTuple):
    root: str  # path of the hierarchy that appears at mount_point
    mount_point: str
    fstype: str
    super_options: tuple[str, ...]


def _read_text(path: str) -> str | None:
    """Return the file's text, or None if it cannot be read for any reason."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _parse_int(text: str) -> int | None:
    """Strict integer parse (ASCII digits, optional sign); None on anything else."""
    text = text.strip()
    return int(text) if _INT_RE.fullmatch(text) else None


def _quota_cpus(quota: int | None, period: int | None) -> int | None:
    """CPUs allowed by quota/period, rounded up; None if either is missing or <= 0."""
    if quota is None or period is None or quota <= 0 or period <= 0:
        return None
    return -(-quota // period)


def _parse_cpu_max(text: str | None) -> int | None:
    """Parse cgroup v2 ``cpu.max`` ("<quota> <period>"); None means no limit."""
    fields = (text or "").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _quota_cpus(_parse_int(fields[0]), _parse_int(fields[1]))


def _parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """Return (v2 path, v1 ``cpu`` controller path) from ``/proc/self/cgroup`` text."""
    v2_path: str | None = None
    v1_path: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and not controllers:
            v2_path = path
        elif "cpu" in controllers.split(","):
            v1_path = path
    return v2_path, v1_path


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _parse_mountinfo(text: str) -> list[_Mount]:
    """Parse ``/proc/self/mountinfo``; malformed lines are skipped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
            fstype, super_options = fields[sep + 1], fields[sep + 3]
        except (ValueError, IndexError):
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        mounts.append(_Mount(root, point, fstype, tuple(super_options.split(","))))
    return mounts


def _cgroup_dirs(fs_root: str, mount: _Mount, cgroup_path: str) -> Iterator[str]:
    """Yield the directory of ``cgroup_path`` under ``mount``, then each ancestor up to
    the mount point. Nothing if the mount does not show that part of the hierarchy."""
    root = mount.root.rstrip("/")
    if cgroup_path != root and not cgroup_path.startswith(root + "/"):
        return
    parts = [p for p in cgroup_path[len(root) :].split("/") if p]
    if ".." in parts or "." in parts:
        parts = []  # outside the visible hierarchy: only the mount root is reachable
    base = os.path.join(fs_root, mount.mount_point.lstrip("/"))
    for depth in range(len(parts), -1, -1):
        yield os.path.join(base, *parts[:depth])


def _min_limit(limits: Iterator[int | None]) -> int | None:
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def _cgroup_v2_limit(fs_root: str, mounts: list[_Mount], cgroup_path: str | None) -> int | None:
    """Smallest ``cpu.max`` limit over the process's v2 cgroup and its ancestors."""
    candidates = [m for m in mounts if m.fstype == "cgroup2"]
    if not candidates:
        candidates = [_Mount("/", "/sys/fs/cgroup", "cgroup2", ())]
    return _min_limit(
        _parse_cpu_max(_read_text(os.path.join(d, "cpu.max")))
        for m in candidates
        for d in _cgroup_dirs(fs_root, m, cgroup_path or "/")
    )


def _v1_dir_limit(directory: str) -> int | None:
    quota = _parse_int(_read_text(os.path.join(directory, "cpu.cfs_quota_us")) or "")
    period = _parse_int(_read_text(os.path.join(directory, "cpu.cfs_period_us")) or "")
    return _quota_cpus(quota, period)


def _cgroup_v1_limit(fs_root: str, mounts: list[_Mount], cgroup_path: str | None) -> int | None:
    """Smallest CFS quota over the process's v1 ``cpu`` cgroup and its ancestors."""
    candidates = [m for m in mounts if m.fstype == "cgroup" and "cpu" in m.super_options]
    if not candidates:
        candidates = [
            _Mount("/", point, "cgroup", ("cpu",))
            for point in ("/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu")
        ]
    return _min_limit(
        _v1_dir_limit(d) for m in candidates for d in _cgroup_dirs(fs_root, m, cgroup_path or "/")
    )


def _env_limit(environ: Mapping[str, str]) -> int | None:
    """The user's cap from ``LANEWAY_MAX_WORKERS``; unset or blank means none."""
    raw = environ.get(ENV_VAR)
    if raw is None or not raw.strip():
        return None
    value = _parse_int(raw)
    if value is None or value < 1:
        raise ValueError(
            f"{ENV_VAR} must be a positive integer (1, 2, 3, ...) capping the number "
            f"of CPUs laneway uses; got {raw!r}"
        )
    return value


def _affinity_cpus() -> int:
    """CPUs this process may be scheduled on (affinity mask), at least 1."""
    count: int | None
    if sys.version_info >= (3, 13):
        count = os.process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):
        try:
            count = len(os.sched_getaffinity(0))
        except OSError:
            count = os.cpu_count()
    else:
        count = os.cpu_count()
    return count or 1


def _available_cpus(
    proc_root: str | os.PathLike[str] = "/proc",
    fs_root: str | os.PathLike[str] = "/",
    environ: Mapping[str, str] | None = None,
    affinity: int | None = None,
) -> int:
    """:func:`available_cpus` with injectable roots, environment and affinity."""
    env_limit = _env_limit(os.environ if environ is None else environ)
    self_dir = os.path.join(os.fspath(proc_root), "self")  # (os.path: pathlib costs ~3 ms)
    v2_path, v1_path = _parse_proc_cgroup(_read_text(os.path.join(self_dir, "cgroup")) or "")
    mounts = _parse_mountinfo(_read_text(os.path.join(self_dir, "mountinfo")) or "")
    limits = [
        _affinity_cpus() if affinity is None else affinity,
        _cgroup_v2_limit(os.fspath(fs_root), mounts, v2_path),
        _cgroup_v1_limit(os.fspath(fs_root), mounts, v1_path),
        env_limit,
    ]
    return max(1, min(limit for limit in limits if limit is not None))


def available_cpus() -> int:
    """Return the number of CPUs this process may really use (always >= 1).

    This is the minimum of:

    * the CPUs the process may be scheduled on: ``os.process_cpu_count()`` (3.13+),
      else ``len(os.sched_getaffinity(0))``, else ``os.cpu_count()``;
    * the cgroup v2 CPU quota (``cpu.max``) of the process's own cgroup and all its
      ancestors, rounded up (a quota of 1.5 CPUs gives 2);
    * the cgroup v1 CFS quota (``cpu.cfs_quota_us / cpu.cfs_period_us``), likewise;
    * the ``LANEWAY_MAX_WORKERS`` environment variable, if set to a positive integer.

    Unreadable, missing or malformed cgroup files are ignored (no limit from them).
    Nothing is cached, so a quota changed at run time is picked up on the next call.

    Raises:
        ValueError: if ``LANEWAY_MAX_WORKERS`` is set to anything but a positive
            integer (an empty value counts as unset).

    Example:
        In a container started with ``docker run --cpus=1.5`` on an 8-CPU host::

            >>> available_cpus()  # doctest: +SKIP
            2
    """
    return _available_cpus()
