"""The first cell of every notebook calls :func:`setup`: the preset and the runtime read and installed
for the kernel, device, preset and cache printed; the book's figure style
(:func:`uni_icl.book.palette.use_book_style`: 150 dpi, the book's colour cycle) set."""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch

from uni_icl import __version__
from uni_icl.presets import Preset, preset_from_env
from uni_icl.results import describe_sources
from uni_icl.runtime import Runtime, install_runtime, runtime_from_env


@dataclass(frozen=True)
class NotebookContext:
    """What a chapter needs to know about where it runs."""

    preset: Preset  # read from UNI_ICL_PRESET here, once; chapters receive this object
    runtime: Runtime  # read from the UNI_ICL_* variables here, once, and installed for the kernel

    @property
    def static(self) -> bool:
        """Executed by the book build (UNI_ICL_BOOK_BUILD=1) for the static pages, not a live kernel."""
        return self.runtime.static_pages

    @property
    def progress(self) -> bool:
        """Progress bars: on in a live kernel, off in the built book (which shows none)."""
        return not self.static


def setup(style: bool = True) -> NotebookContext:
    """Read the preset and the runtime (:mod:`uni_icl.runtime`), install the runtime for this kernel, and
    print the device, preset and cache folder in use (no machine path in the built book).

    With ``style`` (the default), set seaborn's theme and then the book's figure style (150 dpi, the
    book's colour cycle; after the theme, which would replace the cycle), so every page draws alike
    without a line of its own."""
    context = NotebookContext(preset_from_env(), runtime_from_env())
    install_runtime(context.runtime)
    # the thread policy (uni_icl.device) for everything the page computes: the build runs pages side by
    # side, one per core, and a page's own 2-thread torch work beside another page collapsed (measured:
    # two warm pages took 399 s and 320 s side by side, against 43 s and 14 s one after another)
    torch.set_num_threads(context.runtime.threads)
    device = context.runtime.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"uni_icl {__version__} | torch {torch.__version__} | device: {device} ({name})")
    cache = "$UNI_ICL_CACHE (default ~/.cache/uni_icl)" if context.static else str(context.runtime.cache)
    # short lines: the page shows them without scrolling
    print(f"preset: {context.preset.name} (UNI_ICL_PRESET: smoke, quick or paper)")
    print(f"cache: {cache}")
    print(describe_sources(context.preset.name))
    if style:
        import seaborn as sns

        from uni_icl.book.palette import use_book_style

        sns.set_theme(context="notebook", style="whitegrid")
        use_book_style()
    return context
