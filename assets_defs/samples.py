"""One generator job as an asset: a quick, real look at a generator from the Dagster UI."""

import json

import dagster as dg

from assets_defs.storage import StorageResource
from generators.contract import registry
from generators.params import ParameterError, parse_assignments, validate


class SampleJobConfig(dg.Config):
    generator: str = "tabletop"
    seed: int = 0
    assignments: list[str] = ["n_frames=12", "start_time=0.2"]


@dg.asset(group_name="samples", kinds={"pybullet"})
def sample_job(
    context: dg.AssetExecutionContext, config: SampleJobConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Renders one job of the configured generator and records what it produced."""
    gen = registry.get(config.generator)
    try:
        params = validate(gen.Params, parse_assignments(gen.Params, config.assignments))
    except ParameterError as exc:
        raise dg.Failure(
            f"invalid parameters for {gen.name}",
            metadata={"errors": dg.MetadataValue.md("\n".join(f"- {m}" for m in exc.messages))},
        ) from None
    result = gen.run(
        params,
        config.seed,
        storage.path("samples"),
        batch_id="sample",
        on_frame=lambda done, total: context.log.debug(f"frame {done}/{total} rendered"),
    )
    jobs = result.jobs.to_pylist()[0]
    return dg.MaterializeResult(
        metadata={
            "job_id": result.job_id,
            "archive": dg.MetadataValue.path(str(result.archive)),
            "frames": result.frames.num_rows,
            "objects": result.objects.num_rows,
            "categories": dg.MetadataValue.json(
                sorted(set(result.objects.column("category").to_pylist()))
            ),
            "params": dg.MetadataValue.json(json.loads(jobs["params_json"])),
            "total_seconds": jobs["total_seconds"],
        }
    )


defs = dg.Definitions(assets=[sample_job])
