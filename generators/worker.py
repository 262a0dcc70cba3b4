"""The render worker: ``python -m generators.worker SPEC`` runs one job in a process of its own.

``generators.render.isolation`` starts it for jobs whose renderer must be isolated; progress
and errors go to stdout as lines the parent reads. Like Kubric's workers it is a short script:
every piece of machinery lives in the SDK.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from generators.contract import registry
from generators.render.isolation import ERROR, PROGRESS, die_with_parent


def main() -> None:
    die_with_parent()
    spec = json.loads(sys.argv[1])
    gen = registry.get(spec["generator"])
    params = gen.Params.model_validate(spec["params"])
    try:
        gen.run(
            params,
            spec["seed"],
            Path(spec["out_dir"]),
            batch_id=spec["batch_id"],
            on_frame=lambda done, total: print(f"{PROGRESS} {done} {total}", flush=True),
        )
    except Exception as exc:  # reported to the parent, which records the failed job
        traceback.print_exc()
        print(f"{ERROR} {type(exc).__name__}: {exc}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
