"""Planning: a batch spec into jobs and shards.

Planning validates every job against the generator's parameter model, so an invalid batch is
refused before anything runs. Jobs are grouped into shards of ``shard_size``: a shard is the
unit Dagster partitions and runs.

A batch can hold 100,000 jobs and the inbox sensor plans it while it runs, so the per-job work
is kept to the one thing that must be per job, the model's own validation: the manifest's
``params_json`` text is filled into a template of the parameters that do not vary, and the
other columns are built as whole Arrow arrays.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel

from generators.contract import registry
from generators.contract.generator import Generator
from generators.job import make_job_id
from generators.params import ParameterError, field_schemas, validate
from generators.scene.catalog import default_catalog
from vario.batch.samplers import sample_chunks
from vario.batch.spec import BatchSpec, Choices, SpecError, checked_batch

MANIFEST = pa.schema(
    [
        pa.field("batch_id", pa.string()),
        pa.field("job_index", pa.int64()),
        pa.field("job_id", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("params_json", pa.string()),
    ]
)
SHARD_SEPARATOR = "~"  # partition keys are "<batch>~<shard number>"
MAX_ERRORS = 20  # a refused batch reports its first errors, not one per job
CHUNK_JOBS = 65_536  # jobs validated and turned into manifest rows at a time
CHUNK_BYTES = 2**30  # text per manifest column chunk; Arrow's string offsets stop at 2 GiB
_ENCODE = json.JSONEncoder(sort_keys=True).encode  # what json.dumps(..., sort_keys=True) calls


MANIFEST_ROW_GROUP = 8192  # rows per row group: a shard's run reads a few of them, not all


@dataclass(frozen=True)
class Plan:
    """A planned batch. Its manifest is held as the Parquet file it is saved as: a million
    jobs' parameter texts take about 1 GB as Arrow columns and 40 MB compressed."""

    spec: BatchSpec
    parquet: bytes  # the manifest: one row per job, in job order
    job_count: int
    shards: list[str]

    @property
    def manifest(self) -> pa.Table:
        return read_manifest(self.source())

    def source(self) -> pa.BufferReader:
        """The manifest's Parquet bytes to read, copied into memory that Arrow owns. A reader
        over Python ``bytes`` needs the GIL to let go of them; when the last reference goes on
        one of Arrow's threads while the interpreter shuts down, that thread is stopped inside
        a C++ destructor and the process aborts ("terminate called without an active
        exception", apache/arrow#33975): seen once in about a hundred planning processes."""
        owned = pa.BufferOutputStream()
        owned.write(self.parquet)
        return pa.BufferReader(owned.getvalue())

    def head(self, rows: int) -> pa.Table:
        """The first ``rows`` jobs, reading only the row groups that hold them."""
        file = pq.ParquetFile(self.source())
        groups = range(min(file.num_row_groups, -(-rows // MANIFEST_ROW_GROUP)))
        return file.read_row_groups(list(groups), use_threads=False).slice(0, rows)


def read_manifest(source, *, columns: list[str] | None = None, shard: str | None = None):
    """A manifest (a path or a buffer), or some of its columns, or one shard's rows: the
    shard is found from the row groups' statistics, so a shard of a million-job batch reads
    a few thousand rows. Single-threaded, and a buffer should be Arrow's (``Plan.source``):
    a read from memory can abort the process at exit (apache/arrow#33975). Without a shard
    the file is read as one file, not as a dataset: ``pyarrow.dataset`` imports pandas,
    a quarter of a second of every process that reads a batch's shard list."""
    if shard is None:
        with pq.ParquetFile(source) as file:
            return file.read(columns=columns, use_threads=False)
    filters = [("shard", "=", shard)]
    return pq.read_table(source, columns=columns, filters=filters, use_threads=False)


def shard_key(batch: str, index: int) -> str:
    return f"{batch}{SHARD_SEPARATOR}{index:05d}"


def batch_of(shard: str) -> str:
    """The batch of a shard key ``<batch>~NNNNN``; a key of any other form is refused."""
    batch, sep, number = shard.rpartition(SHARD_SEPARATOR)
    if not sep or not number.isdigit():
        raise ValueError(f"not a shard key: {shard[:80]!r} (expected <batch>~NNNNN)")
    return checked_batch(batch)


def _json_column(values: list) -> list[str]:
    """``json.dumps(value, sort_keys=True)`` of each value, a column at a time: floats and ints
    through the C-level ``repr`` that json uses for them, choices encoded once per choice."""
    kinds = set(map(type, values))
    if kinds == {float} and all(map(math.isfinite, values)):
        return list(map(float.__repr__, values))
    if kinds == {int}:
        return list(map(int.__repr__, values))
    if kinds in ({str}, {bool}):
        encoded = {value: _ENCODE(value) for value in set(values)}
        return list(map(encoded.__getitem__, values))
    return list(map(_ENCODE, values))


def _values_of(names: list[str]) -> Callable[[dict], tuple]:
    """The values of ``names`` in a dict, always as a tuple (``itemgetter`` of one name is not)."""
    if len(names) == 1:
        return lambda values: (values[names[0]],)
    return itemgetter(*names) if names else lambda values: ()


class _ParamsText:
    """``json.dumps(params.model_dump(mode="json"), sort_keys=True)`` for many jobs that differ
    only in ``varying``: the first job's other fields become constant text, and each job keeps
    just its varying fields' validated values, which are their own JSON dump (every field is
    a number, bool, choice or list of those) unless the model serializes fields itself or
    computes some. The values are encoded a column at a time once all jobs are in.

    A job whose other fields differ from the first job's (a validator that derives one field
    from another could do that) gets the full dump, so the text is always exact.
    """

    def __init__(self, first: BaseModel, varying: list[str]):
        dumped = first.model_dump(mode="json")
        decorators = type(first).__pydantic_decorators__
        self.plain = not (
            decorators.field_serializers
            or decorators.model_serializers
            or decorators.computed_fields
        )
        self.varying = _values_of(sorted(varying))
        self.others = _values_of([name for name in dumped if name not in varying])
        self.other_values = self.others(first.__dict__)
        self.rows: list[tuple | str] = []  # varying values, or the whole text

        def part(name: str) -> str:  # "%" is escaped: the text is a %-template
            value = "%s" if name in varying else _ENCODE(dumped[name]).replace("%", "%%")
            return f"{_ENCODE(name).replace('%', '%%')}: {value}"

        self.template = "{" + ", ".join(map(part, sorted(dumped))) + "}"

    def add(self, params: BaseModel) -> None:
        values = params.__dict__
        if self.plain and self.others(values) == self.other_values:
            self.rows.append(self.varying(values))
        else:
            self.rows.append(_ENCODE(params.model_dump(mode="json")))

    def texts(self) -> list[str]:
        """Every job's text, in job order."""
        kept = [row for row in self.rows if type(row) is tuple]
        columns = [_json_column(list(column)) for column in zip(*kept, strict=True)]
        filled = iter(
            map(self.template.__mod__, zip(*columns, strict=True))
            if columns
            else [self.template % ()] * len(kept)
        )
        return [next(filled) if type(row) is tuple else row for row in self.rows]


def _generator(spec: BatchSpec) -> Generator:
    try:
        return registry.get(spec.generator)
    except KeyError as exc:
        raise SpecError([f"generator: {exc.args[0]}"]) from None


def _check_ranges(spec: BatchSpec, gen: Generator, schemas: dict, fixed: dict) -> None:
    """Every range end and choice, with the fixed values, must be a valid job: a typo in a
    range is reported once, as the spec's error, rather than once per sampled job."""
    errors = []
    for name, rng_ in spec.sampler.ranges.items():
        if name not in schemas:
            errors.append(f"sampler.ranges.{name}: unknown parameter of {gen.name}")
            continue
        values = rng_.choices if isinstance(rng_, Choices) else list(rng_)
        for value in values:
            try:
                validate(gen.Params, {**fixed, name: value})
            except ParameterError as exc:
                errors += [f"sampler.ranges.{m}" for m in exc.messages]
        if not isinstance(rng_, Choices) and rng_[0] > rng_[1]:
            errors.append(f"sampler.ranges.{name}: low {rng_[0]} is above high {rng_[1]}")
    if errors:
        raise SpecError(errors)


def _params_json(
    model: type[BaseModel], fixed: dict, jobs: list[dict], start: int, max_errors: int
) -> tuple[list[str], list[str]]:
    """Each job validated by the generator's model, as its sorted JSON text, and the first
    ``max_errors`` errors, each naming its job index (jobs are numbered from ``start``)."""
    varying = sorted({name for values in jobs for name in values} & model.model_fields.keys())
    errors, text = [], None
    for index, values in enumerate(jobs, start):
        try:
            params = validate(model, {**fixed, **values})
        except ParameterError as exc:
            errors += [f"job {index}: {m}" for m in exc.messages]
            if len(errors) >= max_errors:
                break
            continue
        if text is None:
            text = _ParamsText(params, varying)
        text.add(params)
    return (text.texts() if text and not errors else []), errors[:max_errors]


def _int64s(values: np.ndarray) -> pa.Array:
    """An int64 Arrow array over a numpy one; not ``pa.array``, whose first call in a process
    imports pandas (seconds, in a fresh sensor or CLI process)."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def _string_chunk(encoded: list[bytes]) -> pa.StringArray:
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, encoded), np.int32, len(encoded)), out=offsets[1:])
    data = pa.py_buffer(b"".join(encoded))
    return pa.StringArray.from_buffers(len(encoded), pa.py_buffer(offsets), data)


def _strings(texts: list[str], chunk_bytes: int = CHUNK_BYTES) -> pa.ChunkedArray:
    """Strings as Arrow from one joined buffer per chunk (``pa.array`` converts them one by
    one, after importing pandas); a chunk holds at most ``chunk_bytes`` of text, as Arrow's
    32-bit offsets need, unless one string alone is longer."""
    encoded = [text.encode() for text in texts]
    ends = np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)))
    chunks, start = [], 0
    while start < len(encoded):
        before = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, before + chunk_bytes, side="right")))
        chunks.append(_string_chunk(encoded[start:stop]))
        start = stop
    return pa.chunked_array(chunks, pa.string())


def _manifest_part(
    spec: BatchSpec, gen: Generator, start: int, seeds: np.ndarray, texts: list[str]
) -> pa.Table:
    """The manifest rows of jobs ``start ...`` as whole arrays: one Python step per job (its
    id) and none for the columns that follow from the job index."""
    index = np.arange(start, start + len(texts), dtype=np.int64)
    first, last = start // spec.shard_size, (start + len(texts) - 1) // spec.shard_size
    shard_names = _strings([shard_key(spec.name, s) for s in range(first, last + 1)])
    catalog = repeat(default_catalog().content_hash)  # this process's, hashed once per process
    ids = list(
        map(make_job_id, repeat(gen.name), repeat(gen.version), texts, seeds.tolist(), catalog)
    )
    columns = [
        _strings([spec.name]).take(_int64s(np.zeros_like(index))),
        _int64s(index),
        _strings(ids),
        shard_names.take(_int64s(index // spec.shard_size - first)),
        _int64s(seeds),
        _strings(texts),
    ]
    return pa.Table.from_arrays(columns, schema=MANIFEST)


def _jobs(spec: BatchSpec, schemas: dict) -> tuple[int, Iterator[list[dict]]]:
    """The number of jobs and their parameter dicts, a chunk at a time."""
    if spec.sampler:
        return sample_chunks(spec.sampler, schemas, spec.seed, CHUNK_JOBS)
    jobs = spec.jobs
    return len(jobs), (jobs[i : i + CHUNK_JOBS] for i in range(0, len(jobs), CHUNK_JOBS))


def plan(spec: BatchSpec) -> Plan:
    """Every job of the batch, validated; raises ``SpecError`` naming what is wrong.

    Jobs are validated and turned into manifest rows a chunk at a time, written into the
    manifest's Parquet file as they come: nothing is held per job but the sampled points, so
    a 1,000,000-job batch plans in well under 1 GB."""
    gen = _generator(spec)
    schemas = field_schemas(gen.Params)
    fixed = {**spec.fixed, "renderer": spec.renderer} if "renderer" in schemas else spec.fixed
    if spec.sampler:
        _check_ranges(spec, gen, schemas, fixed)
    count, chunks = _jobs(spec, schemas)
    seeds = np.random.default_rng(spec.seed).integers(0, 2**31 - 1, size=count)
    errors, start, shards = [], 0, {}
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, MANIFEST, compression="zstd") as writer:
        for jobs in chunks:
            texts, found = _params_json(gen.Params, fixed, jobs, start, MAX_ERRORS - len(errors))
            errors += found
            if len(errors) >= MAX_ERRORS:
                break
            if not errors:
                part = _manifest_part(spec, gen, start, seeds[start : start + len(jobs)], texts)
                writer.write_table(part, row_group_size=MANIFEST_ROW_GROUP)
                shards.update(dict.fromkeys(pc.unique(part.column("shard")).to_pylist()))
            start += len(jobs)
    if errors:
        raise SpecError(errors)
    return Plan(spec, sink.getvalue().to_pybytes(), start, list(shards))
