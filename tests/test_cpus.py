"""Tests for laneway._cpus against fake /proc and cgroup trees."""

from __future__ import annotations

import builtins
import os
import re
from pathlib import Path
from typing import Any

import pytest

from laneway._cpus import _available_cpus, available_cpus

V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTINFO = (
    "31 23 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
    "33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw shared:7 - cgroup cgroup rw,cpu,cpuacct\n"
    "34 31 0:31 / /sys/fs/cgroup/cpuset rw shared:8 - cgroup cgroup rw,cpuset\n"
)


class FakeSystem:
    """A fake /proc/self and filesystem root under a temporary directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.proc = tmp_path / "proc"
        self.root = tmp_path / "root"
        (self.proc / "self").mkdir(parents=True)
        self.root.mkdir()

    def proc_file(self, name: str, text: str) -> None:
        (self.proc / "self" / name).write_text(text)

    def fs_file(self, path: str, text: str) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def cpus(self, environ: dict[str, str] | None = None, affinity: int = 8) -> int:
        return _available_cpus(self.proc, self.root, environ or {}, affinity)

    def v2(self, cgroup: str = "0::/\n") -> None:
        self.proc_file("cgroup", cgroup)
        self.proc_file("mountinfo", V2_MOUNTINFO)


@pytest.fixture
def fake(tmp_path: Path) -> FakeSystem:
    """A fresh fake system."""
    return FakeSystem(tmp_path)


def test_no_cgroup_files_uses_affinity(fake: FakeSystem) -> None:
    """With no /proc or cgroup files at all the affinity count is returned."""
    assert fake.cpus(affinity=6) == 6


def test_v2_root_quota_rounds_up(fake: FakeSystem) -> None:
    """A 1.5-CPU quota at the mount root gives 2."""
    fake.v2()
    fake.fs_file("/sys/fs/cgroup/cpu.max", "150000 100000\n")
    assert fake.cpus() == 2


def test_v2_nested_path(fake: FakeSystem) -> None:
    """The quota of the process's own nested cgroup is found (loky#634)."""
    fake.v2("0::/system.slice/app.service\n")
    fake.fs_file("/sys/fs/cgroup/system.slice/app.service/cpu.max", "300000 100000\n")
    assert fake.cpus() == 3


def test_v2_parent_limit_smaller(fake: FakeSystem) -> None:
    """An ancestor's smaller quota wins over the nested cgroup's."""
    fake.v2("0::/kubepods/pod1/ctr\n")
    fake.fs_file("/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n")
    fake.fs_file("/sys/fs/cgroup/kubepods/pod1/cpu.max", "200000 100000\n")
    fake.fs_file("/sys/fs/cgroup/kubepods/cpu.max", "500000 100000\n")
    assert fake.cpus() == 2


def test_v2_max_is_no_limit(fake: FakeSystem) -> None:
    """``max 100000`` means unlimited."""
    fake.v2()
    fake.fs_file("/sys/fs/cgroup/cpu.max", "max 100000\n")
    assert fake.cpus() == 8


@pytest.mark.parametrize(
    "content", ["", "\n", "garbage", "1 2 3", "abc 100000", "150000 0", "150000 -5", "0 100000"]
)
def test_v2_bad_content_is_no_limit(fake: FakeSystem, content: str) -> None:
    """Empty (loky#478), garbage and zero/negative values in cpu.max mean no limit."""
    fake.v2()
    fake.fs_file("/sys/fs/cgroup/cpu.max", content)
    assert fake.cpus() == 8


def test_v2_tiny_quota_is_one(fake: FakeSystem) -> None:
    """A 1% quota still gives 1 CPU, never 0."""
    fake.v2()
    fake.fs_file("/sys/fs/cgroup/cpu.max", "1000 100000\n")
    assert fake.cpus() == 1


def test_v2_without_mountinfo_falls_back(fake: FakeSystem) -> None:
    """Without mountinfo, /sys/fs/cgroup is assumed for cgroup v2."""
    fake.proc_file("cgroup", "0::/a\n")
    fake.fs_file("/sys/fs/cgroup/a/cpu.max", "400000 100000\n")
    assert fake.cpus() == 4


def test_v2_nonstandard_mount_point(fake: FakeSystem) -> None:
    """A cgroup2 mount found in mountinfo at an unusual place is used."""
    fake.proc_file("cgroup", "0::/jobs/42\n")
    fake.proc_file(
        "mountinfo",
        "25 1 0:22 / /proc rw - proc proc rw\n"
        "41 31 0:38 / /mnt/my\\040cgroups rw,relatime - cgroup2 none rw\n",
    )
    fake.fs_file("/mnt/my cgroups/jobs/42/cpu.max", "300000 100000\n")
    fake.fs_file("/sys/fs/cgroup/jobs/42/cpu.max", "100000 100000\n")  # not the mount
    assert fake.cpus() == 3


def test_v2_path_outside_namespace_reads_mount_root(fake: FakeSystem) -> None:
    """A ``..`` cgroup path cannot be mapped, so only the mount root is read."""
    fake.v2("0::/../sibling\n")
    fake.fs_file("/sys/fs/cgroup/cpu.max", "200000 100000\n")
    assert fake.cpus() == 2


def test_v1_quota(fake: FakeSystem) -> None:
    """A v1 CFS quota of half a CPU gives 1."""
    fake.proc_file("cgroup", "4:cpu,cpuacct:/docker/abc\n3:cpuset:/docker/abc\n")
    fake.proc_file("mountinfo", V1_MOUNTINFO)
    fake.fs_file("/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000\n")
    fake.fs_file("/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert fake.cpus() == 1


def test_v1_unlimited_quota(fake: FakeSystem) -> None:
    """A v1 quota of -1 means unlimited."""
    fake.proc_file("cgroup", "4:cpu,cpuacct:/\n")
    fake.proc_file("mountinfo", V1_MOUNTINFO)
    fake.fs_file("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    fake.fs_file("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert fake.cpus() == 8


def test_v1_mount_root_bind_mount(fake: FakeSystem) -> None:
    """A v1 mount whose root is the container's cgroup maps the path to the mount point."""
    fake.proc_file("cgroup", "4:cpu,cpuacct:/docker/abc\n")
    fake.proc_file(
        "mountinfo", "33 31 0:30 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n"
    )
    fake.fs_file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "200000\n")
    fake.fs_file("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
    assert fake.cpus() == 2


def test_v1_fallback_without_mountinfo(fake: FakeSystem) -> None:
    """Without mountinfo the usual v1 cpu controller paths are read."""
    fake.proc_file("cgroup", "2:cpu:/\n")
    fake.fs_file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "300000\n")
    fake.fs_file("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
    assert fake.cpus() == 3


def test_unreadable_directory_in_place_of_file(fake: FakeSystem) -> None:
    """A directory where cpu.max should be means no limit."""
    fake.v2()
    (fake.root / "sys/fs/cgroup/cpu.max").mkdir(parents=True)
    assert fake.cpus() == 8


def test_permission_error_is_no_limit(fake: FakeSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PermissionError reading cpu.max means no limit."""
    fake.v2()
    fake.fs_file("/sys/fs/cgroup/cpu.max", "100000 100000\n")
    real_open = builtins.open

    def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(file).endswith("cpu.max"):
            raise PermissionError(13, "Permission denied", file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    assert fake.cpus() == 8


def test_affinity_smaller_than_quota(fake: FakeSystem) -> None:
    """Affinity below the quota wins."""
    fake.v2()
    fake.fs_file("/sys/fs/cgroup/cpu.max", "400000 100000\n")
    assert fake.cpus(affinity=2) == 2


def test_env_var_caps(fake: FakeSystem) -> None:
    """LANEWAY_MAX_WORKERS=1 gives 1."""
    assert fake.cpus({"LANEWAY_MAX_WORKERS": "1"}) == 1


def test_env_var_does_not_raise_limit(fake: FakeSystem) -> None:
    """LANEWAY_MAX_WORKERS above the real count does not raise it; blank is unset."""
    assert fake.cpus({"LANEWAY_MAX_WORKERS": "64"}, affinity=4) == 4
    assert fake.cpus({"LANEWAY_MAX_WORKERS": " "}, affinity=4) == 4


@pytest.mark.parametrize("value", ["0", "-3", "abc", "2.5", "1_0"])
def test_env_var_invalid_raises(fake: FakeSystem, value: str) -> None:
    """An invalid LANEWAY_MAX_WORKERS raises ValueError naming the variable and the value."""
    with pytest.raises(ValueError, match=rf"LANEWAY_MAX_WORKERS.*{re.escape(repr(value))}"):
        fake.cpus({"LANEWAY_MAX_WORKERS": value})


def test_real_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """On this machine the result is an int between 1 and os.cpu_count()."""
    monkeypatch.delenv("LANEWAY_MAX_WORKERS", raising=False)
    result = available_cpus()
    assert isinstance(result, int)
    assert 1 <= result <= (os.cpu_count() or 1)
