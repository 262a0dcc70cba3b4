"""Peak memory of a process tree, for benchmarks whose work runs in child processes (pool
workers, render workers, a webserver and its code server), where ``getrusage`` of this
process sees none of it. Read from ``/proc`` (Linux), sampled every 0.1 s."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid], rss[pid] = int(fields[1]), int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    tree, frontier = {root}, [root]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        tree.update(children)
        frontier = children
    return sum(rss.get(p, 0) for p in tree)


class PeakTreeMemory:
    """``with PeakTreeMemory() as peak:`` samples the tree of this process (or ``root``)
    until the block ends; ``peak.bytes`` is then the largest total seen."""

    def __init__(self, root: int | None = None) -> None:
        self.root = root or os.getpid()
        self.bytes = 0
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.1):
            self.bytes = max(self.bytes, tree_rss(self.root))

    def __enter__(self) -> PeakTreeMemory:
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._sampler.join()
