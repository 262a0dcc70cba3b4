"""A test-only generator that fails on request: ``tabletop`` with a ``fault`` parameter.

Registered through the same ``vario.generators`` entry-point group as any plugin (the
``vario_test_plugins`` dist-info beside this file, which the tests put on ``sys.path`` and
``PYTHONPATH``), so failures are deterministic on every machine, with or without a GPU.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from generators.job import JobResult
from generators.library.tabletop import TabletopGenerator, TabletopParams
from generators.render import isolation
from generators.scene.description import Scene


class FaultyParams(TabletopParams):
    fault: Literal["none", "raise", "crash", "vanish", "validate", "abort"] = Field(
        "none",
        description="raise: build_scene raises (unless VARIO_FAULTY_HEALED=1, as a fault "
        "that is gone when the job is retried); crash: the process kills itself; vanish: "
        "the job succeeds, then its archive disappears (as on a disk that loses it); "
        "validate: the model's own validator has a bug (raises, not a field error); "
        "abort: a render worker aborts once its archive is written (native teardown).",
    )

    @model_validator(mode="after")
    def _plugin_bug(self) -> FaultyParams:
        if self.fault == "validate":
            raise RuntimeError("the faulty plugin's validator is broken")
        return self


class FaultyGenerator(TabletopGenerator):
    name = "faulty"
    version = "1.0.0"
    Params = FaultyParams
    description = "Test only: tabletop that raises or crashes when asked to."

    def run(self, params: FaultyParams, seed: int, out_dir: Path, **kwargs) -> JobResult:
        result = super().run(params, seed, out_dir, **kwargs)
        if params.fault == "vanish" and result.archive is not None:
            result.archive.unlink()
        if params.fault == "abort" and isolation.in_worker():
            os.abort()
        return result

    def build_scene(self, params: FaultyParams, seed: int) -> Scene:
        if params.fault == "raise" and os.environ.get("VARIO_FAULTY_HEALED") != "1":
            raise RuntimeError(f"faulty generator asked to fail (seed {seed})")
        if params.fault == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().build_scene(params, seed)
