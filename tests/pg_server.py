"""A PostgreSQL server for the tests: the machine's own on loopback when it answers, else one
started for the session from Debian's server binaries (installed with apt-get when missing,
as root), in a temporary folder, on a free port, stopped at the end. Each caller gets a
database of its own, dropped afterwards."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2

LOOPBACK = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def _answers(url: str) -> bool:
    try:
        psycopg2.connect(_libpq(url) + "/postgres", connect_timeout=3).close()
    except psycopg2.OperationalError:
        return False
    return True


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://")


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _install() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("no PostgreSQL server here, and installing one needs root")
    apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=apt, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "postgresql"], check=True, env=apt, capture_output=True
    )


@contextlib.contextmanager
def _own_server() -> Iterator[str]:
    """A server of our own: initdb and pg_ctl, run as the ``postgres`` user when root (the
    server refuses to run as root)."""
    binaries = _binaries()
    if binaries is None:
        _install()
        binaries = _binaries()
        assert binaries is not None, "apt-get installed no PostgreSQL server binaries"
    folder = Path(tempfile.mkdtemp(prefix="vario-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    run = {"check": True, "capture_output": True}
    subprocess.run(
        [*as_user, binaries / "initdb", "-D", data, "-A", "trust", "-U", "postgres"], **run
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    pg_ctl = [*as_user, binaries / "pg_ctl", "-D", data, "-l", folder / "log", "-w"]
    subprocess.run([*pg_ctl, "-o", options, "start"], **run)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def server() -> Iterator[str]:
    """The URL of a server (no database in it)."""
    if _answers(LOOPBACK):
        yield LOOPBACK
        return
    if _binaries() is None:
        _install()  # Debian's package starts its own cluster on 5432
        if _answers(LOOPBACK):
            yield LOOPBACK
            return
    with _own_server() as url:
        yield url


@contextlib.contextmanager
def database(url: str) -> Iterator[str]:
    """A fresh database on the server at ``url``, dropped afterwards; its URL."""
    name = f"vario_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(_libpq(url) + "/postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield f"{url}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()
