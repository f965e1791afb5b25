"""Device choice (CUDA when present, otherwise the CPU), memory size, and the thread policy.

The thread policy: the numerical work of training and evaluation runs on one torch thread
(:func:`single_threaded`). A reduction split over several threads adds its parts in another order,
so its float result, and from there a trained model, would depend on how many threads the caller
happened to set; on one thread every run of a configuration gives the same numbers. Parallelism,
where wanted, belongs to separate worker processes, not to threads inside one computation.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def default_device() -> torch.device:
    """The first CUDA device if one is available, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def memory_bytes(device: torch.device) -> int:
    """Total memory of ``device``: the GPU's own memory, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the enclosed torch work on one intra-op thread, then restore the caller's thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
