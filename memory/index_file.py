"""Index files on disk: a checked header plus the FAISS bytes, replaced atomically."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zlib
from pathlib import Path
from typing import Any

from memory.index import CorruptIndexError, IndexConfig, TeamIndex

_MAGIC = b"TSMIDX1\n"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def index_path(index_dir: Path, table: str, team: str) -> Path:
    """A safe, collision-free file name for any team id (slashes, dots, unicode, case)."""
    digest = hashlib.sha256(team.encode()).hexdigest()[:12]
    slug = _UNSAFE.sub("_", team)[:40].strip("_") or "team"
    return index_dir / f"{table}.{slug}.{digest}.faiss"


def write_index_file(path: Path, index: TeamIndex, header: dict[str, Any]) -> int:
    """Write atomically (temp file, fsync, os.replace); returns the bytes written."""
    payload, tombstones = index.snapshot()
    head = json.dumps({**header, "tombstones": tombstones}, sort_keys=True).encode()
    blob = b"".join(
        (
            _MAGIC,
            len(head).to_bytes(4, "big"),
            head,
            zlib.crc32(payload).to_bytes(4, "big"),
            payload,
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(blob)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return len(blob)


def read_index_file(
    path: Path, dim: int, config: IndexConfig | None = None
) -> tuple[dict[str, Any], TeamIndex]:
    """Read and check a file; raises FileNotFoundError or CorruptIndexError."""
    data = path.read_bytes()
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 8:
        raise CorruptIndexError("not a threadswarm index file")
    at = len(_MAGIC)
    head_len = int.from_bytes(data[at : at + 4], "big")
    at += 4
    try:
        header = json.loads(data[at : at + head_len])
    except ValueError as exc:
        raise CorruptIndexError("unreadable header") from exc
    at += head_len
    crc, payload = data[at : at + 4], data[at + 4 :]
    if len(crc) < 4 or zlib.crc32(payload) != int.from_bytes(crc, "big"):
        raise CorruptIndexError("checksum mismatch (truncated or damaged)")
    if not isinstance(header, dict):
        raise CorruptIndexError("unreadable header")
    index = TeamIndex.deserialize(payload, dim, config)
    index.remove(header.get("tombstones") or [])
    index.dirty = False
    return header, index


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse directory fsync; the rename is still atomic
    finally:
        os.close(fd)
