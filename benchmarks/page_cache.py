"""The page cache emptied between measured steps, so each reads its files from disk: a step
that ran after another found that one's files cached (or its write-back under way) and the
figures followed the order of the steps."""

from __future__ import annotations

import os
from pathlib import Path


def drop_caches() -> bool:
    """Dirty pages written back, then the page cache emptied where this may (root); whether
    it was emptied."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True
