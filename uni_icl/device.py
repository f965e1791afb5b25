"""Device choice (CUDA when present, otherwise the CPU), memory size, and the thread policy.

The thread policy: the numerical work of training and evaluation runs on ``UNI_ICL_THREADS``
torch threads, default **one** (:func:`policy_threads`), whatever the caller set. Two reasons,
both measured on the 2-core machine: with another process busy on one core, a 2-thread training
step of the quick transformer ran 25-60x slower than a 1-thread one (OpenMP threads wait for the
shared core); and a reduction split over several threads adds its parts in another order, so its
float result, and from there a trained model, would depend on the thread count. Parallelism
belongs to worker processes (:mod:`uni_icl.parallel`), one thread each, not to threads inside one
computation. ``UNI_ICL_THREADS=2`` exists to check that verdicts do not depend on it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

import torch


def default_device() -> torch.device:
    """The first CUDA device if one is available, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def memory_bytes(device: torch.device) -> int:
    """Total memory of ``device``: the GPU's own memory, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


THREADS_ENV = "UNI_ICL_THREADS"
PER_CORE = 4  # at most this many torch threads, or worker processes, per core this process may use


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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


def policy_thread_count(environ: Mapping[str, str] = os.environ) -> int:
    """Torch threads per process under the policy: ``UNI_ICL_THREADS`` (see :func:`resource_count`), default 1."""
    return resource_count(THREADS_ENV, environ, 1, "default 1")


@contextlib.contextmanager
def policy_threads() -> Iterator[None]:
    """Run the enclosed torch work on the policy's thread count, then restore the caller's."""
    previous = torch.get_num_threads()
    torch.set_num_threads(policy_thread_count())
    try:
        yield
    finally:
        torch.set_num_threads(previous)
