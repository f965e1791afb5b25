"""The device and the thread policy of the runtime (:mod:`uni_icl.runtime`), and memory size.

The thread policy: the numerical work of training and evaluation runs on the runtime's ``threads``
torch threads (``UNI_ICL_THREADS``), default **one** (:func:`policy_threads`), whatever the caller
set. Two reasons, both measured on the 2-core machine: with another process busy on one core, a
2-thread training step of the quick transformer ran 25-60x slower than a 1-thread one (OpenMP
threads wait for the shared core); and a reduction split over several threads adds its parts in
another order, so its float result, and from there a trained model, would depend on the thread
count. Parallelism belongs to worker processes (:mod:`uni_icl.parallel`), one thread each, not to
threads inside one computation. ``UNI_ICL_THREADS=2`` exists to check that verdicts do not depend
on it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from uni_icl.runtime import current_runtime


def default_device() -> torch.device:
    """The runtime's device: the first CUDA device if one is available, else the CPU."""
    return current_runtime().device


def memory_bytes(device: torch.device) -> int:
    """Total memory of ``device``: the GPU's own memory, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@contextlib.contextmanager
def policy_threads() -> Iterator[None]:
    """Run the enclosed torch work on the runtime's thread count, then restore the caller's."""
    previous = torch.get_num_threads()
    torch.set_num_threads(current_runtime().threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
