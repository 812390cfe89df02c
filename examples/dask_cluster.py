"""The same parallel_map on a Dask cluster (here a small local one).

Needs the dask extra: pip install "laneway[dask]".  On a real cluster, pass its
scheduler address to distributed.Client, or set LANEWAY_DASK_ADDRESS and call
parallel_map(..., backend="dask") with no client at all.

Run: python examples/dask_cluster.py
"""

from __future__ import annotations

import sys

import laneway


def score(n: int) -> int:
    """Pure-Python work for the cluster's workers."""
    return sum(i * i % 7 for i in range(n))


def maybe_fails(n: int) -> int:
    if n == 2:
        raise ValueError(f"item {n} is bad")
    return n


def main() -> None:
    try:
        import distributed
    except ImportError:
        print('this example needs the dask extra: pip install "laneway[dask]"')
        return
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster):
        results = laneway.parallel_map(score, [200_000] * 16, backend="dask")
        print(f"{len(results)} results from the cluster; plan: {laneway.last_plan()}")
        outcomes = laneway.parallel_map(maybe_fails, range(4), backend="dask",
                                        errors="return")
        print("errors stay per item:", outcomes)
        try:
            laneway.parallel_map(score, [1], backend="dask", task_timeout=1)
        except ValueError as exc:
            print("task_timeout on dask:", exc)


if __name__ == "__main__":
    sys.exit(main())
