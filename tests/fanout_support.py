"""State shared by the tasks of ``tests/test_fanout.py`` across the LocalCluster's worker
threads: tasks are shipped to Dask by value, so they import this module to share it."""

from __future__ import annotations

import threading

LOCK = threading.Lock()
SLOT = {"inside": 0, "peak": 0}
