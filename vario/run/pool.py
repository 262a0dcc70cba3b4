"""Worker pools for shard runs: forkserver children that start ready and run many jobs each.

A worker used to take seconds to become useful: it imported the generators, built the asset
catalog, had pyarrow import pandas on its first table, and, before any of that, re-ran the
parent's ``__main__`` (multiprocessing does so in every forkserver or spawn child), which for
the Dagster CLI or a benchmark script means importing Dagster. Now the forkserver does all of
it once per process (``vario.run.warm`` and the modules the parent's main refers to), so a
worker forked from it is ready at once and a pool per shard costs a fraction of a second.

Forkserver children share no threads with Dagster, and a pool still lives for one shard only:
one left running hung its process at exit.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from types import ModuleType

from generators.render.isolation import die_with_parent
from generators.scene import catalog
from generators.settings import settings

WARM_MODULE = "vario.run.warm"
FORKSERVER_PARENT = "VARIO_FORKSERVER_PARENT"  # the forkserver's parent pid, for vario.run.warm


def main_imports() -> list[str]:
    """The importable modules the parent's ``__main__`` refers to, when a forkserver child
    will re-run it before its first task; with these already imported in the server the
    re-run only defines the script's own names."""
    main = sys.modules.get("__main__")
    if main is None or not _reruns_main(main):
        return []
    names = set()
    for value in vars(main).values():
        name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", "")
        module = sys.modules.get(name) if isinstance(name, str) else None
        if module is not None and module is not main and module.__spec__ is not None:
            names.add(name)
    return sorted(names)


def _reruns_main(main: ModuleType) -> bool:
    """As ``multiprocessing.spawn`` decides: a script run by path is re-run in each child,
    a module run with ``-m`` is re-imported unless it is a package's ``__main__`` (as for
    ``python -m dagster``), and ``python -c`` code is not re-run."""
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return not spec.name.endswith("__main__")
    return getattr(main, "__file__", None) is not None


def vario_env() -> dict[str, str]:
    """The parent's ``VARIO_*`` settings (catalog, cache, time limit), for its workers."""
    return {k: v for k, v in os.environ.items() if k.startswith("VARIO_")}


def init_worker(env: dict[str, str]) -> None:
    """Tie a new worker's life to its forkserver's, which ends with the shard's process (a
    step killed with SIGKILL leaves no worker rendering on), and give it the parent's
    settings: the forkserver may have started before they were set (or unset), and then
    the catalog it built is read again with them, once per worker, so that workers render
    with the catalog the shard's process (and its planner) resolves from the same settings.
    A worker renders at a lower priority than its parent: batch work yields the CPU to what
    a person is waiting on (the API, the daemon, a shell)."""
    die_with_parent(os.getppid())
    if vario_env() != env:
        for name in vario_env().keys() - env.keys():
            del os.environ[name]
        os.environ.update(env)
        catalog.refresh()
    os.nice(settings().worker_niceness)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes forked from the warm forkserver, each kept for every
    job it is given (no ``max_tasks_per_child``). The preload list takes effect when this
    process's forkserver starts, that is with its first pool."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([WARM_MODULE, *main_imports()])
    os.environ[FORKSERVER_PARENT] = str(os.getpid())  # read by the forkserver, if it starts now
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=init_worker,
        initargs=(vario_env(),),
    )
