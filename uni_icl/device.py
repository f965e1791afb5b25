"""Device choice: CUDA when present, otherwise the CPU."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """The first CUDA device if one is available, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
