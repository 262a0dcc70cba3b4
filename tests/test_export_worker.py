"""The helper processes' shared ends (``vario.export.worker``) and the Hugging Face shard
writer's stream (``vario.export.hf_shards``): answers, errors naming where, a stream cut
short doing nothing more."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vario.export import hf_shards
from vario.export.worker import STOPPED, serve


def test_a_helper_answers_its_result_its_error_with_notes_or_nothing_when_cut_short():
    answer = io.StringIO()
    assert serve(lambda: {"bytes": 3}, answer) == 0
    assert json.loads(answer.getvalue()) == {"bytes": 3}

    def broken():
        error = KeyError("rgb/00001.png")
        error.add_note("/data/archives/job.zip")
        raise error

    answer = io.StringIO()
    assert serve(broken, answer) == 1
    assert json.loads(answer.getvalue()) == {
        "error": "KeyError: 'rgb/00001.png' (/data/archives/job.zip)"
    }
    answer = io.StringIO()
    assert serve(lambda: None, answer) == STOPPED and answer.getvalue() == ""


SCHEMA = pa.schema(
    [pa.field("image", hf_shards.IMAGE), pa.field("frame", pa.int32())],
    metadata={"huggingface": "{}"},
)


def _stream(batches: list[tuple[pa.RecordBatch, dict]]) -> io.BytesIO:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, hf_shards.stream_schema(SCHEMA)) as writer:
        for batch, metadata in batches:
            writer.write_batch(batch, custom_metadata=metadata)
    sink.seek(0)
    return sink


def _batch(archive: str, members: list[str | None], inline: list[bytes | None]) -> pa.RecordBatch:
    n = len(members)
    image = pa.StructArray.from_arrays(
        [pa.array(inline, pa.binary()), pa.array([f"{i}.png" for i in range(n)])],
        fields=list(hf_shards.IMAGE),
    )
    columns = [image, pa.array(range(n), pa.int32()), pa.array([archive] * n), pa.array(members)]
    return pa.RecordBatch.from_arrays(columns, schema=hf_shards.stream_schema(SCHEMA))


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "job.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("rgb/0.png", os.urandom(3000))
        z.writestr("rgb/1.png", os.urandom(5000))
    return path


def test_shards_hold_members_and_given_bytes_and_answer_their_digests(archive, tmp_path):
    batch = _batch(str(archive), ["rgb/0.png", None, "rgb/1.png"], [None, b"given", None])
    end = pa.RecordBatch.from_pylist([], schema=hf_shards.stream_schema(SCHEMA))
    stream = _stream([(batch, {"split": "train"}), (end, {"end": ""})])
    result = hf_shards._serve(tmp_path, 2**20, stream, os.getppid())
    [[name, digest]] = result["shards"]["train"]
    table = pq.read_table(tmp_path / name)
    assert table.schema == SCHEMA  # the stream's own columns are not the shard's
    with zipfile.ZipFile(archive) as z:
        expected = [z.read("rgb/0.png"), b"given", z.read("rgb/1.png")]
    assert [v["bytes"] for v in table["image"].to_pylist()] == expected
    assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest


def test_a_stream_without_its_end_mark_is_a_stopped_export(archive, tmp_path):
    batch = _batch(str(archive), ["rgb/0.png"], [None])
    assert (
        hf_shards._serve(tmp_path, 2**20, _stream([(batch, {"split": "train"})]), os.getppid())
        is None
    )


def test_a_missing_member_names_its_archive(archive, tmp_path):
    batch = _batch(str(archive), ["rgb/9.png"], [None])
    answer = io.StringIO()
    stream = _stream([(batch, {"split": "train"})])
    assert serve(lambda: hf_shards._serve(tmp_path, 2**20, stream, os.getppid()), answer) == 1
    error = json.loads(answer.getvalue())["error"]
    assert error.startswith("KeyError") and str(archive) in error
