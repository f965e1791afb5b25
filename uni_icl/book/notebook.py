"""The first cell of every notebook calls :func:`setup`: device, preset and cache, printed."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from uni_icl import __version__
from uni_icl.device import default_device
from uni_icl.presets import Preset, preset_from_env
from uni_icl.storage import cache_root


@dataclass(frozen=True)
class NotebookContext:
    """What a chapter needs to know about where it runs."""

    preset: Preset  # read from UNI_ICL_PRESET here, once; chapters receive this object
    device: torch.device
    cache: Path
    progress: bool  # progress bars: on in a live kernel, off in the book build (UNI_ICL_PROGRESS=0)


def setup(style: bool = True) -> NotebookContext:
    """Print the device, preset and cache folder in use; set the plotting style."""
    progress = os.environ.get("UNI_ICL_PROGRESS", "1") != "0"
    context = NotebookContext(preset_from_env(), default_device(), cache_root(), progress)
    name = (
        torch.cuda.get_device_name(context.device) if context.device.type == "cuda" else platform.processor() or "CPU"
    )
    print(f"uni_icl {__version__} | torch {torch.__version__} | device: {context.device} ({name})")
    print(f"preset: {context.preset.name} (set UNI_ICL_PRESET to smoke, quick or paper) | cache: {context.cache}")
    if style:
        import seaborn as sns

        sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    return context
