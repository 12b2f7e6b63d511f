"""common.memory: freed heap memory goes back to the OS between the stages of a long job."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from common.memory import release_memory


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and uses glibc's malloc_trim")
def test_freed_per_frame_arrays_are_returned():
    """Per-frame arrays of a long video (small, on the heap) freed while a later allocation pins the top of the
    heap: glibc keeps the pages until release_memory()."""
    frames = [np.ones(5000, np.float32) for _ in range(20000)]  # ~400 MB of 20 KB arrays
    pin = np.ones(5000, np.float32)
    before = _rss_mb()
    del frames
    kept = _rss_mb()
    release_memory()
    after = _rss_mb()
    assert before - after > 200, (before, kept, after)
    assert pin.sum() == 5000
