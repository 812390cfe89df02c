"""A program that imports numpy at its top level, as many do.

``bench_foundation.py``'s first-call section runs it in ``--child first-call VARIANT``
mode, to time a process pool's first call when every process that runs the script's
top level pays for that import: ``multiprocessing``'s forkserver workers each run the
script again as they start (CPython before 3.13.8: gh-126631); laneway's fork server
runs it once and forks the workers from it.  The function the pools run is
``bench_foundation.sq``, imported by reference by both.
"""

import sys

import bench_foundation
import numpy  # noqa: F401  (the point of this script: a heavy top-level import)

if __name__ == "__main__":
    bench_foundation.child_main(sys.argv[sys.argv.index("--child") + 1:])
