"""Chunk sizing: aim at CHUNK_TARGET_S per chunk, keep the end balanced, and send a run
known to be tiny as one chunk."""

from __future__ import annotations

import os

import pytest

import laneway
from laneway._chunks import ChunkSizer
from laneway._profile import recent_pace


def _sizes(sizer: ChunkSizer, n: int) -> list[int]:
    return [sizer.next_size() for _ in range(n)]


def test_fixed_chunksize_is_kept() -> None:
    sizer = ChunkSizer(fixed=7, workers=2, total=100, target_s=0.01)
    sizer.observe(7, 1e-6)
    assert _sizes(sizer, 3) == [7, 7, 7]


def test_unknown_pace_starts_at_one_item_and_grows_by_at_most_growth() -> None:
    sizer = ChunkSizer(fixed=None, workers=2, total=None, target_s=0.01)
    assert sizer.next_size() == 1
    sizer.observe(1, 1e-6)  # tiny items: the size grows, GROWTH-fold per chunk
    assert _sizes(sizer, 3) == [8, 64, 512]


def test_known_total_keeps_spread_chunks_per_worker() -> None:
    sizer = ChunkSizer(fixed=None, workers=2, total=800, target_s=0.01, per_item_s=1e-4)
    # the work is not tiny (80 ms): at least SPREAD chunks per worker, 800 / 8 = 100
    assert max(_sizes(sizer, 5)) == 100


def test_slow_items_go_one_per_chunk() -> None:
    sizer = ChunkSizer(fixed=None, workers=2, total=50, target_s=0.01, per_item_s=0.04)
    assert _sizes(sizer, 3) == [1, 1, 1]


def test_a_run_known_to_be_tiny_is_one_chunk() -> None:
    sizer = ChunkSizer(fixed=None, workers=2, total=2, target_s=0.01, per_item_s=1e-6)
    assert sizer.next_size() == 2
    # just above the threshold, the work is split between the workers again
    total = int(ChunkSizer.ONE_CHUNK_S / 1e-6) + 8
    sizer = ChunkSizer(fixed=None, workers=2, total=total, target_s=0.01, per_item_s=1e-6)
    assert sizer.next_size() < total


def worker_pid(_: object) -> int:
    return os.getpid()


def test_second_small_call_on_process_pool_goes_to_one_worker() -> None:
    # A run records how long an item takes; the next tiny run of the same function is
    # then sent as one message (one worker) instead of one per item.  (Two recording
    # runs: on a loaded machine the very first items of fresh workers can take over
    # 100 us each, one-off costs of the worker, not the function's pace.)
    for _ in range(2):
        laneway.parallel_map(worker_pid, range(4), backend="process", workers=2)
    pace = recent_pace(worker_pid)
    assert pace is not None and pace < ChunkSizer.ONE_CHUNK_S / 2
    pids = laneway.parallel_map(worker_pid, range(2), backend="process", workers=2)
    assert len(set(pids)) == 1


def triple(x: int) -> int:
    return 3 * x


def test_a_worker_sends_a_chunk_of_tiny_items_back_in_one_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a worker knows a function's pace, a chunk of tiny items is one step and one
    result message (the first chunk is run in growing steps to learn that pace)."""
    from laneway import _run

    batches: list[int] = []
    original = _run.Run._next_batch

    def spy(self: _run.Run, *args: object) -> object:
        batch = original(self, *args)  # type: ignore[arg-type]
        batches.append(batch.count)
        return batch

    monkeypatch.setattr(_run.Run, "_next_batch", spy)
    laneway.parallel_map(triple, range(50), backend="process", workers=1, chunksize=50)
    assert len(batches) > 1  # learning: steps of 1, 2, 4, ... items, one message each
    batches.clear()
    assert laneway.parallel_map(triple, range(50), backend="process", workers=1,
                                chunksize=50) == [3 * x for x in range(50)]
    assert batches == [50]
