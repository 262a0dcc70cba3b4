"""What a generator is: a name, a version, a parameter model and a scene builder.

A generator only *describes* scenes (``build_scene``); ``run`` is the one entry point that turns
(parameters, seed, output folder) into a job archive, the same way for every generator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from generators.contract.domain import Domain
from generators.params import GeneratorParams
from generators.scene.description import Scene

if TYPE_CHECKING:
    from generators.job import JobResult


class Generator(ABC):
    name: ClassVar[str]
    version: ClassVar[str]
    Params: ClassVar[type[GeneratorParams]]
    domain: ClassVar[Domain]
    description: ClassVar[str] = ""

    @abstractmethod
    def build_scene(self, params: GeneratorParams, seed: int) -> Scene:
        """The scene for these parameters and seed; the same inputs give the same scene."""

    def run(
        self,
        params: GeneratorParams,
        seed: int,
        out_dir: Path,
        *,
        batch_id: str = "adhoc",
        on_frame: Callable[[int, int], None] | None = None,
        time_limit: float | None = None,
        planned_id: str | None = None,
    ) -> JobResult:
        """Build, simulate, render and label one job; write its archive into ``out_dir``.

        ``on_frame(done, total)`` is called after each frame, for progress reports.
        ``time_limit`` (seconds) applies to isolated (Cycles) jobs; a job past it, or one
        whose worker crashes, comes back with status ``failed`` and no archive.
        ``planned_id`` is the id a batch planned the job under; if this process's catalog
        gives the job another id, it comes back ``failed`` ("catalog changed since the batch
        was planned") and writes nothing.
        """
        from generators.job import run_job  # the whole pipeline; describing needs none of it

        return run_job(
            self,
            params,
            seed,
            Path(out_dir),
            batch_id=batch_id,
            on_frame=on_frame,
            time_limit=time_limit,
            planned_id=planned_id,
        )
