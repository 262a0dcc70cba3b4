"""One generator job as an asset: a quick, real look at a generator from the Dagster UI."""

import json

import dagster as dg

from assets_defs import OWNERS, generators_version, tags, with_code_references
from assets_defs.storage import StorageResource
from generators.contract import registry
from generators.params import ParameterError, parse_assignments, validate


class SampleJobConfig(dg.Config):
    generator: str = "tabletop"
    seed: int = 0
    assignments: list[str] = ["n_frames=12", "start_time=0.2"]


@dg.asset(
    group_name="samples",
    kinds={"pybullet"},
    owners=OWNERS,
    tags=tags("samples", "render", renderer="fast-or-cycles"),
    code_version=generators_version(),
)
def sample_job(
    context: dg.AssetExecutionContext, config: SampleJobConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Renders one job of the configured generator (run config: generator, seed,
    parameter assignments) into `samples/`, and records what it produced: a quick, real
    look at a generator. Invalid parameters fail the run with one line per field."""
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


defs = dg.Definitions(assets=with_code_references([sample_job]))
