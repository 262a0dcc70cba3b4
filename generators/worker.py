"""The render worker: ``python -m generators.worker`` runs jobs in a process of its own.

``generators.render.isolation`` starts it for jobs whose renderer must be isolated and keeps
it warm: it imports the renderer once, then reads one job spec (JSON) per line on stdin until
end of input. Progress, errors and the end of each job go to stdout as lines the parent
reads. Like Kubric's workers it is a short script: every piece of machinery lives in the SDK.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from generators.contract import registry
from generators.render.isolation import END, ERROR, PROGRESS, die_with_parent


def run(spec: dict) -> str | None:
    """One job; its error when it failed without raising (its id differs here), else None."""
    gen = registry.get(spec["generator"])
    params = gen.Params.model_validate(spec["params"])
    result = gen.run(
        params,
        spec["seed"],
        Path(spec["out_dir"]),
        batch_id=spec["batch_id"],
        on_frame=lambda done, total: print(f"{PROGRESS} {done} {total}", flush=True),
        planned_id=spec["job_id"],  # the id the parent computed and waits for
    )
    return result.error


def main() -> None:
    die_with_parent()
    import generators.render.cycles  # noqa: F401  (Blender and Kubric: once, before any job)

    for line in sys.stdin:
        try:
            error = run(json.loads(line))
        except Exception as exc:  # reported to the parent, which records the failed job
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            print(f"{END} ok", flush=True)
        else:
            print(f"{ERROR} {error}", flush=True)
            print(f"{END} failed", flush=True)
    # every archive is closed, synced and renamed and every job reported: leave without
    # Blender's native teardown, which can abort ("terminate called ...") at exit
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
