"""Where a command writes what it was asked to (``--output``): checked before any work starts.

A file target (``reproduce --output``) must be a regular file or a new name; a folder target (the
book builder's ``--output``) a folder or a new name. A symbolic link is followed: what it points
to is written, the link stays. Refused, each with a ValueError of one line naming the flag and what
is allowed: an empty path; a device, FIFO or socket (writing there would replace the device node,
or wait for a reader); a folder where a file belongs, or a file where a folder belongs; a path
inside the cache folder (the store's own entries, e.g. its scorecard, would be overwritten behind
its back); a name longer than the file system holds; a folder that cannot be written.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from uni_icl.storage import cache_root


def output_file(value: str, flag: str = "--output") -> Path:
    """The file ``value`` names, through any symbolic link, after the checks of the module docstring."""
    allowed = "allowed: a regular file or a new name, in a writable folder outside the cache"
    target = _resolved(value, flag, allowed)
    if target.exists():
        _check_kind(target, stat.S_ISREG, "a file", flag, allowed)
    _check_folder(target.parent, flag, allowed)
    return target


def output_folder(value: str, flag: str = "--output") -> Path:
    """The folder ``value`` names, through any symbolic link, after the checks of the module docstring."""
    allowed = "allowed: a folder or a new name, in a writable folder outside the cache"
    target = _resolved(value, flag, allowed)
    if target.exists():
        _check_kind(target, stat.S_ISDIR, "a folder", flag, allowed)
    _check_folder(target if target.exists() else target.parent, flag, allowed)
    return target


def _resolved(value: str, flag: str, allowed: str) -> Path:
    """``value`` as an absolute path with every symbolic link followed, its names' lengths checked and
    outside the cache folder."""
    if not value.strip():
        raise ValueError(f"{flag}: got an empty path; {allowed}")
    path = Path(value).expanduser().absolute()
    _check_lengths(path, flag)
    try:
        target = path.resolve()
    except (OSError, RuntimeError) as error:  # a loop of symbolic links
        raise ValueError(f"{flag}: {path} cannot be followed ({error}); {allowed}") from None
    _check_lengths(target, flag)
    cache = cache_root().expanduser().absolute().resolve()
    if target == cache or cache in target.parents:
        raise ValueError(f"{flag}: {target} is inside the cache folder {cache}; {allowed}")
    return target


def _check_lengths(path: Path, flag: str) -> None:
    """Raise unless every name of ``path`` and the whole path fit the file system of its nearest folder."""
    folder = _nearest_folder(path)
    name_max, path_max = os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    for name in path.parts[1:]:
        if len(os.fsencode(name)) > name_max:
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise ValueError(
                f"{flag}: the name {shown!r} is {len(os.fsencode(name))} bytes long; allowed: names of at most "
                f"{name_max} bytes (the limit of the file system at {folder})"
            )
    if len(os.fsencode(str(path))) >= path_max:
        raise ValueError(f"{flag}: the path is {len(os.fsencode(str(path)))} bytes long; allowed: under {path_max}")


def _nearest_folder(path: Path) -> Path:
    """The nearest existing ancestor of ``path`` (lstat errors such as too-long names count as missing)."""
    for folder in path.parents:
        try:
            if folder.is_dir():
                return folder
        except OSError:
            continue
    return Path(path.anchor)


def _check_kind(target: Path, is_kind, kind: str, flag: str, allowed: str) -> None:
    mode = target.stat().st_mode
    if not is_kind(mode):
        raise ValueError(f"{flag}: {target} is {_describe(mode)}, not {kind}; {allowed}")


def _describe(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISREG, "a file"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def _check_folder(folder: Path, flag: str, allowed: str) -> None:
    """Raise unless the nearest existing ancestor of (or) ``folder`` is a folder a file can be created in."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag}: {existing} is not a folder; {allowed}")
    try:
        with tempfile.NamedTemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"{flag}: the folder {existing} is not writable ({error.strerror}); {allowed}") from None
