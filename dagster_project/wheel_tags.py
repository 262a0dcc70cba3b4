"""Repairs the installed bpy wheel's tag, so that ``uv run`` stops reinstalling it.

The bpy 4.2.0 wheel for CPython 3.11 carries a ``WHEEL`` file whose ``Tag`` says ``cp39``.
uv trusts the installed ``WHEEL`` file over the wheel's name, finds the install incompatible
and uninstalls and reinstalls bpy (2,012 files) on every ``uv run`` (astral-sh/uv #17711,
#17850); an interrupted reinstall can leave bpy half-deleted. Rewriting the tag to the one
the wheel was installed as (its file name's) ends the loop. ``uv sync`` installs the wheel
afresh, so every ``vario`` command, the test suite and ``.ci/run`` call ``repair()``; it reads
one small file and returns when there is nothing to do.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from importlib import metadata


def repair(distribution: str = "bpy") -> bool:
    """Point the installed wheel's tag at this interpreter; True when a file was changed."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    wheel = dist.locate_file(f"{dist._path.name}/WHEEL")  # type: ignore[attr-defined]
    text = wheel.read_text()
    python = f"cp{sys.version_info.major}{sys.version_info.minor}"
    lines = text.splitlines()
    fixed = []
    for line in lines:
        if line.startswith("Tag: "):
            platform = line[len("Tag: ") :].split("-", 2)[2]
            line = f"Tag: {python}-{python}-{platform}"
        fixed.append(line)
    new = "\n".join(fixed) + "\n"
    if new == text:
        return False
    partial = wheel.with_name("WHEEL.partial")
    partial.write_text(new)
    os.replace(partial, wheel)
    _update_record(dist, wheel.name, new.encode())
    return True


def _update_record(dist: metadata.Distribution, name: str, content: bytes) -> None:
    """Keep RECORD's hash and size of the rewritten file true."""
    record = dist.locate_file(f"{dist._path.name}/RECORD")  # type: ignore[attr-defined]
    digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
    member = f"{dist._path.name}/{name}"  # type: ignore[attr-defined]
    rows = [
        f"{member},sha256={digest},{len(content)}" if row.split(",", 1)[0] == member else row
        for row in record.read_text().splitlines()
    ]
    partial = record.with_name("RECORD.partial")
    partial.write_text("\n".join(rows) + "\n")
    os.replace(partial, record)


if __name__ == "__main__":
    repair()
