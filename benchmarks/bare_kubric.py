"""The baseline for ``cycles_vs_bare_kubric.py``: Kubric rendering the same scene by itself.

It builds the identical Kubric scene (same assets, materials, lights, camera and keyframes)
and calls Kubric's own ``Blender.render()`` for all frames: no labels, no encoding, no archive.

    python benchmarks/bare_kubric.py GENERATOR PARAMS_JSON SEED
"""

from __future__ import annotations

import json
import sys
import time

from generators.contract import registry
from generators.render.cycles import CyclesRenderer
from generators.scene.catalog import default_catalog
from generators.sim.physics import simulate


def main() -> None:
    started = time.perf_counter()
    gen = registry.get(sys.argv[1])
    params = gen.Params.model_validate(json.loads(sys.argv[2]))
    scene = gen.build_scene(params, int(sys.argv[3]))
    catalog = default_catalog()
    renderer = CyclesRenderer(scene, catalog, simulate(scene, catalog), params)
    frames = renderer.blender.render()
    renderer.close()
    assert len(frames["rgba"]) == scene.frame_count
    print(json.dumps({"seconds_in_process": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
