"""The runtime: where results are stored and found, and what a process computes on.

A :class:`Runtime` is read once, at the edge (``python -m uni_icl``, the book build, a notebook's
``setup()``, the scripts), by :func:`runtime_from_env`: the one place the ``UNI_ICL_*`` variables
below are read (the preset's ``UNI_ICL_PRESET`` is read beside it, by
:func:`uni_icl.presets.preset_from_env`). A bad value is one ValueError naming the variable and
what it allows, before any work. The edge then installs the runtime for the process
(:func:`use_runtime`, or :func:`install_runtime` for a notebook kernel or a worker process), and
the code below reads it with :func:`current_runtime`; nothing below the edge reads the
environment. The parallel trainer hands its runtime to each worker process explicitly.

==============================  ==========================================================================
variable                        field
==============================  ==========================================================================
``UNI_ICL_CACHE``               ``cache``: the store's folder (default ``~/.cache/uni_icl``; set but empty
                                is an error)
``UNI_ICL_SHIPPED``             ``shipped``: the folder of shipped preset folders (default ``results/`` of
                                the checkout)
``UNI_ICL_FRESH``               ``fresh``: 1 ignores the shipped results (a full reproduction); 0 or unset
``UNI_ICL_READ_LOG``            ``read_log``: a file listing every entry served (set by the book build)
``UNI_ICL_THREADS``             ``threads``: torch threads per process (default 1, :mod:`uni_icl.device`)
``UNI_ICL_WORKERS``             ``workers``: training processes (default one per core,
                                :mod:`uni_icl.parallel`)
``UNI_ICL_SCHEDULER``           ``scheduler``: train the grid on Dask: a scheduler's address (``tcp://host:8786``)
                                or ``local`` (a ``LocalCluster`` started here, :mod:`uni_icl.cluster`);
                                unset: the local process pool
``UNI_ICL_BOOK_BUILD``          ``static_pages``: 1 while the book build executes the notebooks
``UNI_ICL_CONFIRM_CPU_PAPER``   ``confirm_cpu_paper``: 1 trains the ``paper`` preset on a CPU without
                                asking (:mod:`uni_icl.confirm`)
==============================  ==========================================================================

The device is not a variable: CUDA when present, otherwise the CPU.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

CACHE_ENV = "UNI_ICL_CACHE"
SHIPPED_ENV = "UNI_ICL_SHIPPED"
FRESH_ENV = "UNI_ICL_FRESH"
READ_LOG_ENV = "UNI_ICL_READ_LOG"
THREADS_ENV = "UNI_ICL_THREADS"
WORKERS_ENV = "UNI_ICL_WORKERS"
SCHEDULER_ENV = "UNI_ICL_SCHEDULER"
BOOK_BUILD_ENV = "UNI_ICL_BOOK_BUILD"
CONFIRM_ENV = "UNI_ICL_CONFIRM_CPU_PAPER"

DEFAULT_CACHE = Path.home() / ".cache" / "uni_icl"
REPOSITORY_RESULTS = Path(__file__).resolve().parents[1] / "results"  # next to the package in a checkout
LOCAL_SCHEDULER = "local"  # the scheduler value that starts a Dask LocalCluster on this machine
SCHEDULER_ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss)://[^\s/:]+(:\d{1,5})?$")  # what distributed.Client connects to
PER_CORE = 4  # at most this many torch threads, or worker processes, per core this process may use


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pick_device() -> torch.device:
    """The first CUDA device if one is available, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@dataclass(frozen=True)
class Runtime:
    """Where results live and what computes them; the fields' variables are in the module docstring."""

    cache: Path = DEFAULT_CACHE  # the store's folder
    shipped: Path = REPOSITORY_RESULTS  # the folder holding the shipped preset folders (results/<preset>/)
    fresh: bool = False  # ignore the shipped results, and the cache's copies of them
    read_log: Path | None = None  # append the cache-relative path of every entry served here
    device: torch.device = field(default_factory=pick_device)  # where models train and evaluate
    threads: int = 1  # torch threads per process (uni_icl.device's thread policy)
    workers: int = field(default_factory=usable_cores)  # training processes (uni_icl.parallel)
    static_pages: bool = False  # executed by the book build for the static pages, not a live kernel
    confirm_cpu_paper: bool = False  # the paper preset may train on a CPU without asking
    scheduler: str | None = None  # a Dask scheduler's address or "local" (uni_icl.cluster); None: the process pool


def runtime_from_env(environ: Mapping[str, str] | None = None) -> Runtime:
    """The runtime the ``UNI_ICL_*`` variables of ``environ`` (default: this process's) describe; a bad
    value raises a ValueError naming the variable and what it allows. The one place they are read."""
    environ = os.environ if environ is None else environ
    return Runtime(
        cache=_cache(environ),
        shipped=Path(environ.get(SHIPPED_ENV) or REPOSITORY_RESULTS),
        fresh=_flag(environ, FRESH_ENV, "1 (ignore the shipped results) or 0"),
        read_log=Path(environ[READ_LOG_ENV]) if environ.get(READ_LOG_ENV) else None,
        device=pick_device(),
        threads=resource_count(THREADS_ENV, environ, 1, "default 1"),
        workers=resource_count(WORKERS_ENV, environ, usable_cores(), "default: one per core"),
        static_pages=_flag(environ, BOOK_BUILD_ENV, "1 (the book build executes the pages) or 0"),
        confirm_cpu_paper=_flag(environ, CONFIRM_ENV, "1 (train the paper preset on a CPU) or 0"),
        scheduler=check_scheduler_address(SCHEDULER_ENV, environ.get(SCHEDULER_ENV, "").strip() or None),
    )


def check_scheduler_address(name: str, value: str | None) -> str | None:
    """``value`` if it is ``local`` or a scheduler address (``tcp://host:port``) or None; else a ValueError
    naming ``name`` (the variable or the command's option). Whether a scheduler answers there is checked
    by :func:`uni_icl.cluster.check_scheduler`."""
    if value is None or value == LOCAL_SCHEDULER or SCHEDULER_ADDRESS.match(value):
        return value
    shown = value if len(value) <= 60 else value[:60] + "..."
    raise ValueError(
        f"{name}: got {shown!r}; allowed: {LOCAL_SCHEDULER} (a Dask LocalCluster here) or a scheduler's address "
        "such as tcp://host:8786"
    )


def _cache(environ: Mapping[str, str]) -> Path:
    value = environ.get(CACHE_ENV)
    if value is None:
        return DEFAULT_CACHE
    if not value.strip():
        raise ValueError(f"{CACHE_ENV}: set to an empty string; allowed: a folder path, or unset for {DEFAULT_CACHE}")
    return Path(value)


def _flag(environ: Mapping[str, str], name: str, allowed: str) -> bool:
    value = environ.get(name, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{name}: got {value!r}; allowed: {allowed}")
    return value == "1"


def resource_count(name: str, environ: Mapping[str, str], default: int, default_text: str) -> int:
    """The positive integer in ``environ[name]`` (``default`` if unset or blank), at most :data:`PER_CORE`
    per usable core: a larger one would thrash or exhaust the machine (100000 threads crashed torch),
    so it is refused, before any work, with a ValueError naming ``name`` and the allowed range."""
    text = environ.get(name, "").strip()
    if not text:
        return default
    digits = text.lstrip("0")
    if not (text.isascii() and text.isdigit()) or not digits:
        raise ValueError(f"{name}: got {text!r}; allowed: a positive integer ({default_text})")
    limit = PER_CORE * usable_cores()
    if len(digits) > len(str(limit)) or int(digits) > limit:  # never int() of thousands of digits
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise ValueError(
            f"{name}: got {shown}; allowed: integers from 1 to {limit} ({PER_CORE} per core, "
            f"{usable_cores()} cores usable here)"
        )
    return int(digits)


_active: Runtime | None = None  # the process's runtime, installed by its edge


def current_runtime() -> Runtime:
    """The runtime the edge installed; a RuntimeError if none was (see the module docstring)."""
    if _active is None:
        raise RuntimeError(
            "no runtime installed: the commands, the book build and a notebook's setup() install one; "
            "in your own code, run inside `with use_runtime(runtime_from_env()):` (uni_icl.runtime)"
        )
    return _active


def install_runtime(runtime: Runtime) -> None:
    """Make ``runtime`` the process's runtime from now on (a notebook kernel, a worker process)."""
    global _active
    _active = runtime


@contextlib.contextmanager
def use_runtime(runtime: Runtime) -> Iterator[Runtime]:
    """Run the enclosed code under ``runtime``, then restore the runtime installed before."""
    global _active
    previous, _active = _active, runtime
    try:
        yield runtime
    finally:
        _active = previous
