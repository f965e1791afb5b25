"""The on-disk store: content-addressed, atomic, checksummed, safe under concurrent writers.

Every entry is one file whose first line is the SHA-256 of the rest. Writes go to a temporary
file in the same folder, then ``os.replace`` (atomic on POSIX), so a reader never sees half an
entry. A truncated or corrupted entry fails the checksum, is reported with a warning, removed and
treated as missing (the caller recomputes it). ``entry_lock`` serialises two processes computing
the same entry, so the second one loads what the first one wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "UNI_ICL_CACHE"


def cache_root() -> Path:
    """The store's folder: $UNI_ICL_CACHE, else ~/.cache/uni_icl."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "uni_icl")


def check_writable(folder: Path) -> None:
    """Raise a ValueError naming ``folder`` if entries cannot be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(
            f"cache folder: {folder} is not writable ({error.strerror}); set {CACHE_ENV} to a writable folder"
        ) from None


def config_hash(config: dict) -> str:
    """Stable 16-hex-digit key of a JSON-able configuration."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_atomic(path: Path, payload: bytes, *, checksum: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = hashlib.sha256(payload).hexdigest().encode() + b"\n" if checksum else b""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(header + payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_checked(path: Path) -> bytes | None:
    """The payload, or None (with a warning, after removing the file) if it is corrupted."""
    if not path.exists():
        return None
    data = path.read_bytes()
    digest, _, payload = data.partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        warnings.warn(f"corrupted cache entry {path} (checksum mismatch): removed, recomputing", stacklevel=3)
        path.unlink(missing_ok=True)
        return None
    return payload


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save ``obj`` to ``path`` atomically with a checksum."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _write_atomic(path, buffer.getvalue())


def checked_torch_load(path: Path):
    """The object saved by :func:`atomic_torch_save`, or None if missing or corrupted."""
    payload = _read_checked(path)
    return None if payload is None else torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)


def atomic_json_save(obj, path: Path) -> None:
    """Write JSON atomically with a checksum."""
    _write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def atomic_json_export(obj, path: Path) -> None:
    """Write plain JSON (no checksum line, for other programs to read) atomically."""
    _write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode(), checksum=False)


def checked_json_load(path: Path):
    """The object saved by :func:`atomic_json_save`, or None if missing or corrupted."""
    payload = _read_checked(path)
    return None if payload is None else json.loads(payload)


@contextlib.contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock for computing the entry at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def json_entry(path: Path, compute: Callable[[], Any]) -> Any:
    """The JSON object stored at ``path``; if it is missing or corrupted, ``compute()`` it and store it.

    Computed under :func:`entry_lock`, so concurrent callers compute an entry once.
    """
    with entry_lock(path):
        stored = checked_json_load(path)
        if stored is not None:
            return stored
        value = compute()
        atomic_json_save(value, path)
    return value
