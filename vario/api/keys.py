"""API keys: made once by ``vario api-key create``, shown once, stored as a salted hash.

A key reads ``vario_<id>_<secret>``: the id finds its record, the secret (32 random bytes)
proves it. Records live in ``<data>/api/keys.json`` (written atomically): id, scope, salt,
SHA-256 of salt and secret, creation time. A fast hash is enough here: a slow one (scrypt,
bcrypt) protects guessable passwords, and a 256-bit random secret cannot be guessed; it
would cost every request tens of milliseconds.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from generators.labels.archive import write_atomic
from vario.store.layout import DataStore

Scope = Literal["read", "submit", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "submit", "admin")  # each allows what those before do
_KEY = re.compile(r"vario_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class ApiKey(BaseModel):
    id: str
    scope: Scope
    salt: str
    digest: str
    created: str

    def allows(self, scope: Scope) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)


def keys_path(store: DataStore) -> Path:
    return store.root / "api" / "keys.json"


def load_keys(store: DataStore) -> dict[str, ApiKey]:
    """The keys as recorded now: read again only when the file changed (a key created
    while the server runs works at once)."""
    path = keys_path(store)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    return _read_keys(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_keys(path: str, mtime_ns: int, size: int) -> dict[str, ApiKey]:
    return {k["id"]: ApiKey.model_validate(k) for k in json.loads(Path(path).read_text())}


def create_key(store: DataStore, scope: Scope) -> str:
    """A new key of ``scope``, recorded by its hash; the returned key is never stored."""
    if scope not in SCOPES:
        raise ValueError(f"scope: one of {', '.join(SCOPES)} (got {scope!r})")
    key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    record = ApiKey(
        id=key_id,
        scope=scope,
        salt=salt,
        digest=_digest(salt, secret),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    keys = load_keys(store)
    keys[key_id] = record
    path = keys_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps([k.model_dump() for k in keys.values()], indent=2).encode()
    write_atomic(path, data)
    path.chmod(0o600)
    return f"vario_{key_id}_{secret}"


def verify(keys: dict[str, ApiKey], token: str) -> ApiKey | None:
    """The key ``token`` is, or None for one malformed, unknown or wrong."""
    match = _KEY.fullmatch(token)
    if match is None:
        return None
    record = keys.get(match.group(1))
    if record is None:
        return None
    proven = hmac.compare_digest(record.digest, _digest(record.salt, match.group(2)))
    return record if proven else None


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()
