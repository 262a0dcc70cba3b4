"""A test-only generator that fails on request: ``tabletop`` with a ``fault`` parameter.

Registered through the same ``vario.generators`` entry-point group as any plugin (the
``vario_test_plugins`` dist-info beside this file, which the tests put on ``sys.path`` and
``PYTHONPATH``), so failures are deterministic on every machine, with or without a GPU.
"""

from __future__ import annotations

import os
import signal
from typing import Literal

from pydantic import Field

from generators.library.tabletop import TabletopGenerator, TabletopParams
from generators.scene.description import Scene


class FaultyParams(TabletopParams):
    fault: Literal["none", "raise", "crash"] = Field(
        "none", description="raise: build_scene raises; crash: the process kills itself."
    )


class FaultyGenerator(TabletopGenerator):
    name = "faulty"
    version = "1.0.0"
    Params = FaultyParams
    description = "Test only: tabletop that raises or crashes when asked to."

    def build_scene(self, params: FaultyParams, seed: int) -> Scene:
        if params.fault == "raise":
            raise RuntimeError(f"faulty generator asked to fail (seed {seed})")
        if params.fault == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().build_scene(params, seed)
