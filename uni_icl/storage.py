"""The on-disk store: content-addressed, atomic, checksummed, safe under concurrent writers.

Every entry is one file whose first line is the SHA-256 of the rest. Writes go to a temporary
file in the same folder, then ``os.replace`` (atomic on POSIX), so a reader never sees half an
entry. An entry that fails the checksum, that does not parse, or that its reader's ``validate``
rejects (a missing key, an accuracy above 1, a NaN) is reported with one :class:`CacheWarning`,
removed and treated as missing (the caller recomputes it). Models load with
``torch.load(weights_only=True)``: an entry that holds anything but tensors and plain values (a
crafted pickle) is refused unread, never executed. ``entry_lock`` serialises two processes
computing the same entry, so the second one loads what the first one wrote; it is an ``flock``,
released when its process ends, however it ends. Entries and locks are opened without following a
symbolic link and without blocking: a link, FIFO, device or socket where an entry belongs is damage
like any other, and so is an entry that does not decode (JSON nested too deep, a value of the wrong
type). Each write removes the temporary files that killed writers left in its folder. A path the
store cannot use (a folder where an entry belongs, a file where a folder belongs) raises
:class:`StorageError`, one line naming the path.

Where the store lives is the runtime's (:mod:`uni_icl.runtime`). Lookup order: the cache (its
``cache``, ``$UNI_ICL_CACHE``), then the **shipped results** (its ``shipped`` folder of preset
folders, ``results/<preset>/`` in the repository by default; read only: a shipped entry is copied
into the cache, checked there, never changed where it ships), then compute. Keys are content
addresses of everything an entry depends on, so an entry whose key no longer matches the code is
never found. A ``fresh`` runtime (``UNI_ICL_FRESH=1``) ignores the shipped results (a full
reproduction), including the copies earlier runs made in the cache (each marked by an empty
``NAME.shipped`` file beside it). A runtime's ``read_log`` file gets the cache-relative path of
every entry served (what ``python -m uni_icl results export`` ships). Under :func:`offline`, a missing entry raises
:class:`MissingEntryError` instead of being computed (``results status``).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import stat
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from uni_icl.runtime import CACHE_ENV, current_runtime

MANIFEST = "manifest.json"
SHIPPED_SUFFIX = ".gz"  # a shipped entry is the cache's file, gzip-compressed (deterministically: no time stamp)
_offline = contextvars.ContextVar("uni_icl_offline", default=False)

Validator = Callable[[Any], None]  # raises a ValueError saying what is wrong with a loaded value


class CacheWarning(UserWarning):
    """A cache entry was unusable (corrupted, unreadable or invalid): it was removed and is recomputed."""


class MissingEntryError(Exception):
    """Under :func:`offline`, an entry is neither in the cache nor shipped (it would be computed)."""

    def __init__(self, path: Path):
        super().__init__(f"missing entry: {path}")
        self.path = path


class StorageError(Exception):
    """The store cannot use a path (a folder where a file belongs, ...); the message is one line naming it."""


def cache_root() -> Path:
    """The store's folder: the runtime's ``cache`` ($UNI_ICL_CACHE, else ~/.cache/uni_icl)."""
    return current_runtime().cache


def shipped_roots() -> list[Path]:
    """The shipped-results folders searched after the cache (each holds a manifest); none when fresh."""
    runtime = current_runtime()
    if runtime.fresh:
        return []
    return sorted(manifest.parent for manifest in runtime.shipped.glob(f"*/{MANIFEST}"))


def shipped_counterpart(path: Path, root: Path | None = None) -> Path | None:
    """The shipped file holding the entry that belongs at ``path`` in the cache, or None."""
    try:
        relative = path.relative_to(root or cache_root())
    except ValueError:
        return None
    for shipped in shipped_roots():
        candidate = shipped / f"{relative}{SHIPPED_SUFFIX}"
        if candidate.is_file():
            return candidate
    return None


def is_stored(path: Path) -> bool:
    """Whether the entry at ``path`` is in the cache or shipped (it will be loaded, not computed); in a
    fresh runtime a cache entry copied from the shipped results does not count."""
    if path.exists() and not (shipped_results_off() and _shipped_marker(path).exists()):
        return True
    return shipped_counterpart(path) is not None


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Inside, an entry that is neither cached nor shipped raises :class:`MissingEntryError` instead of computing."""
    token = _offline.set(True)
    try:
        yield
    finally:
        _offline.reset(token)


def is_offline() -> bool:
    return _offline.get()


def _copy_shipped(path: Path) -> bool:
    """Copy the shipped entry of ``path`` (checksum line included) into the cache; False if none ships.

    A shipped file that does not decompress is treated like any damaged entry's copy would be: the
    entry is then missing (and computed), with one warning; the shipped file itself is never changed."""
    shipped = shipped_counterpart(path)
    if shipped is None:
        return False
    try:
        payload = gzip.decompress(shipped.read_bytes())
    except (OSError, EOFError, zlib.error):
        warnings.warn(f"unreadable shipped entry {shipped}: ignored, recomputing", CacheWarning, stacklevel=3)
        return False
    _write_atomic(path, payload, checksum=False)
    _shipped_marker(path).touch()
    return True


def _shipped_marker(path: Path) -> Path:
    """The empty file beside a cache entry that was copied from the shipped results (not computed here)."""
    return path.with_name(path.name + ".shipped")


def shipped_results_off() -> bool:
    """Whether the runtime is ``fresh`` (``UNI_ICL_FRESH=1``): the shipped results are off (a full reproduction)."""
    return current_runtime().fresh


def _log_read(path: Path) -> None:
    """Append ``path`` (relative to the cache) to the runtime's read log, if any: one short line per entry."""
    log = current_runtime().read_log
    if log is None:
        return
    try:
        line = str(path.relative_to(cache_root()))
    except ValueError:
        return
    with contextlib.suppress(OSError), open(log, "a") as handle:  # a log that cannot be written is no log
        handle.write(line + "\n")


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


def storage_error(path: Path, error: OSError) -> StorageError:
    """A one-line :class:`StorageError` for ``error``, raised while using ``path``, naming what is in the way."""
    for folder in reversed(path.parents):
        if folder.exists() and not folder.is_dir():
            return StorageError(f"storage: {folder} is a file where a folder belongs; remove it, or {_elsewhere()}")
    if path.is_dir():
        return StorageError(f"storage: {path} is a folder where a file belongs; remove it, or {_elsewhere()}")
    return StorageError(f"storage: cannot use {path} ({error.strerror or error}); {_elsewhere()}")


def _elsewhere() -> str:
    return f"set {CACHE_ENV} to another cache folder"


@contextlib.contextmanager
def _storage_errors(path: Path) -> Iterator[None]:
    """Turn an OSError raised while using ``path`` into a one-line :class:`StorageError`."""
    try:
        yield
    except OSError as error:
        raise storage_error(path, error) from None


def config_hash(config: dict) -> str:
    """Stable 16-hex-digit key of a JSON-able configuration."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_hash(weights: dict[str, torch.Tensor] | torch.nn.Module) -> str:
    """Stable 16-hex-digit content hash of a model's weights (names, dtypes, shapes and values, in order).

    Derived entries (evaluations, tables, distilled students) put it in their key, so replacing a
    model's weights (retrained elsewhere, restored, edited) makes what was computed from them stale.
    """
    state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    digest = hashlib.sha256()
    for name, tensor in state.items():
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _write_atomic(path: Path, payload: bytes, *, checksum: bool = True) -> None:
    """Write ``payload`` (after its checksum line) to ``path`` through a temporary file and ``os.replace``.

    Whatever interrupts the write, ``path`` holds the old entry or the new one, never a part. The
    temporary file is named ``.NAME.PID.XXXXXXXX.tmp`` (NAME cut to 32 characters, PID the
    writer's), so a leftover one can be told apart: each write removes the folder's stale ones
    (:func:`remove_stale_temporaries`).
    """
    header = hashlib.sha256(payload).hexdigest().encode() + b"\n" if checksum else b""
    with _storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{path.name[:TEMPORARY_NAME_LENGTH]}.{os.getpid()}."
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(header + payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        remove_stale_temporaries(path.parent)


TEMPORARY_NAME_LENGTH = 32  # characters of an entry's name in its temporary file's name (4 bytes each at most)
STALE_SECONDS = 3600.0  # a temporary file untouched this long belongs to a writer that is gone
ORPHAN_SECONDS = 60.0  # ... and one untouched this long whose writer's PID is not running here
_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temporaries(folder: Path, *, now: float | None = None) -> list[Path]:
    """Remove the temporary files that writers killed mid-write left in ``folder``; returns them.

    A temporary file of :func:`_write_atomic` is stale when it is older than :data:`STALE_SECONDS`,
    or older than :data:`ORPHAN_SECONDS` and its writer (the PID in its name) is not running (the
    minute spares a writer in another PID namespace sharing the folder: a write takes seconds).
    Other files are never touched.
    """
    now = time.time() if now is None else now
    removed = []
    for path in folder.glob(".*.tmp"):
        match = _TEMPORARY.match(path.name)
        if match is None:
            continue
        with contextlib.suppress(OSError):  # gone already, or not ours to remove: the cleanup is best effort
            age = now - path.lstat().st_mtime
            if age > STALE_SECONDS or (age > ORPHAN_SECONDS and not _running(int(match["pid"]))):
                path.unlink()
                removed.append(path)
    return removed


def _running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _discard(path: Path, problem: str) -> None:
    """Warn (one line) that the entry at ``path`` is unusable, and remove it: it is then missing."""
    warnings.warn(f"{problem} cache entry {path}: removed, recomputing", CacheWarning, stacklevel=4)
    with _storage_errors(path):
        path.unlink(missing_ok=True)


def _read_checked(path: Path) -> bytes | None:
    """The payload, or None if missing or damaged (then with a warning, after removing what is there).

    Opened without following a symbolic link and without blocking (a FIFO where an entry belongs
    would otherwise wait forever for a writer): a link, a FIFO, a device or a socket at ``path`` is
    a damaged entry. A folder there raises :class:`StorageError`.
    """
    with _storage_errors(path):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            _discard(path, "damaged (a symbolic link, not a file)")
            return None
        with os.fdopen(fd, "rb") as handle:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, "is a folder")
            data = handle.read() if stat.S_ISREG(mode) else None
    if data is None:
        _discard(path, "damaged (a FIFO, device or socket, not a file)")
        return None
    digest, _, payload = data.partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        _discard(path, "corrupted (checksum mismatch)")
        return None
    return payload


def _validated(path: Path, value: Any, validate: Validator | None) -> Any:
    """``value`` if ``validate`` accepts it; otherwise warn, remove the entry and return None."""
    if validate is not None:
        try:
            validate(value)
        except DECODING_ERRORS as error:
            _discard(path, f"invalid ({_one_line(error)})")
            return None
    return value


# what reading or checking a stored value that is not what its reader expects can raise: a wrong key,
# a wrong type (a list where a dict belongs), JSON nested too deep to parse or to walk
DECODING_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save ``obj`` (tensors and plain values only) to ``path`` atomically with a checksum."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _write_atomic(path, buffer.getvalue())


def checked_torch_load(path: Path, validate: Validator | None = None):
    """The object saved by :func:`atomic_torch_save`, or None if missing, corrupted or rejected by ``validate``.

    Loaded with ``weights_only=True``: tensors, numbers, strings and containers of them only. An
    entry that holds anything else (a crafted pickle that would run code) is refused unread.
    """
    payload = _read_checked(path)
    if payload is None:
        return None
    try:
        value = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception:  # any way the bytes fail to load safely: the entry is unusable, never executed
        _discard(path, "refused (it holds more than tensors and plain values, or does not load)")
        return None
    return _validated(path, value, validate)


def atomic_json_save(obj, path: Path) -> None:
    """Write JSON atomically with a checksum."""
    _write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def atomic_json_export(obj, path: Path) -> None:
    """Write plain JSON (no checksum line, for other programs to read) atomically."""
    _write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode(), checksum=False)


def checked_json_load(path: Path, validate: Validator | None = None):
    """The object saved by :func:`atomic_json_save`, or None if missing, corrupted or rejected by ``validate``."""
    payload = _read_checked(path)
    if payload is None:
        return None
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError), or nested too deep
        _discard(path, "unreadable (not JSON, or nested too deep)")
        return None
    return _validated(path, value, validate)


@contextlib.contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock for computing the entry at ``path`` (held on ``path``.lock).

    An ``flock``: the system releases it when its process ends, however it ends (kill -9, a crash),
    so no lock outlives its holder. The lock file is opened without following a symbolic link and
    without blocking; a link, FIFO, device or socket in its place is removed (one warning) and a
    file created instead, so nothing is created outside the cache. Its stale temporary files
    (:func:`remove_stale_temporaries`) are removed from the entry's folder first.
    """
    lock_path = path.with_name(path.name + ".lock")
    with _storage_errors(lock_path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_lock(lock_path)
    with os.fdopen(fd, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_lock(lock_path: Path) -> int:
    """A descriptor of the regular file at ``lock_path`` (created if missing), never of what a link names."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(lock_path, flags, 0o644)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        fd = None
    if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    if fd is not None:
        os.close(fd)
    warnings.warn(f"not a regular file at lock {lock_path}: removed, a lock file created", CacheWarning, stacklevel=4)
    lock_path.unlink(missing_ok=True)
    fd = os.open(lock_path, flags, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced again in between: give up, naming the path
        os.close(fd)
        raise OSError(errno.EEXIST, "not a regular file")
    return fd


def cached_entry(
    path: Path, compute: Callable[[], Any], validate: Validator | None = None, *, tensors: bool = False
) -> tuple[Any, bool]:
    """The entry stored at ``path`` and True; if it is missing or unusable, ``compute()`` it, store it,
    and return it with False. The one train-or-load / evaluate-or-load of the package.

    Looked up in the cache, then in the shipped results (see the module docstring).
    ``tensors``: the entry holds tensors (``torch.save``, loaded with ``weights_only=True``); else it
    is JSON. ``validate`` checks a loaded value (a rejected one is recomputed) and a computed one
    before it is stored (its error, e.g. a :class:`~uni_icl.validation.NonFiniteError`, then
    propagates and nothing is stored). Computed under :func:`entry_lock`, so concurrent callers
    compute an entry once.
    """
    load, save = (checked_torch_load, atomic_torch_save) if tensors else (checked_json_load, atomic_json_save)
    with entry_lock(path):
        stored = None if shipped_results_off() and _shipped_marker(path).exists() else load(path, validate)
        if stored is None and _copy_shipped(path):
            stored = load(path, validate)
        _log_read(path)
        if stored is not None:
            return stored, True
        if is_offline():
            raise MissingEntryError(path)
        value = compute()
        if validate is not None:
            validate(value)
        save(value, path)
        _shipped_marker(path).unlink(missing_ok=True)  # computed here now
    return value, False


def entry_file(path: Path) -> bytes | None:
    """The file of the entry at ``path`` as the cache holds it (checksum line included), a shipped one
    copied into the cache first; None where :func:`is_stored` would say False. With
    :func:`store_entry_file`, how an entry travels to a machine that cannot see this cache and back
    (:mod:`uni_icl.cluster`)."""
    with entry_lock(path):
        if shipped_results_off() and _shipped_marker(path).exists():
            return None
        if not path.exists() and not _copy_shipped(path):
            return None
        with _storage_errors(path):
            return path.read_bytes()


def store_entry_file(path: Path, data: bytes) -> None:
    """Store ``data``, an entry's file as :func:`entry_file` returns it, at ``path`` (atomically, as computed
    here: a shipped-copy mark beside it is removed). A damaged one is found when it is read, like any entry."""
    with entry_lock(path):
        _write_atomic(path, data, checksum=False)
        _shipped_marker(path).unlink(missing_ok=True)


def json_entry(path: Path, compute: Callable[[], Any], validate: Validator | None = None) -> Any:
    """The JSON value of :func:`cached_entry` (computed or loaded)."""
    return cached_entry(path, compute, validate)[0]
