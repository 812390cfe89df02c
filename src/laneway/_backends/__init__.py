"""Backends: where a run's chunks execute (serial, thread, process).

Each backend offers ``open_run(fn, sink, workers) -> BackendRun``; a ``BackendRun``
takes chunks with ``submit(chunk)`` and delivers :class:`laneway._chunks.Batch`
objects to the run's one result queue (``sink``); ``close()`` drops what has not
started.  See docs/architecture.md.
"""
