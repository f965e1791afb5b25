"""The first cell of every notebook calls :func:`setup`: the preset and the runtime read and installed
for the kernel, device, preset and cache printed; the book's figure style
(:func:`uni_icl.book.palette.use_book_style`: 150 dpi, the book's colour cycle) set; on Colab, Colab's
widget manager for the ipywidgets version this package installs. A chapter's first cell after it
prints :func:`plan_line`: whether the page will load its models or train them, and how long their
training took on the machine that shipped the results."""

from __future__ import annotations

import platform
import sys
import textwrap
from dataclasses import dataclass

import torch

from uni_icl import __version__
from uni_icl.presets import Preset, preset_from_env
from uni_icl.results import describe_sources, load_manifest
from uni_icl.runtime import Runtime, install_runtime, runtime_from_env
from uni_icl.storage import cache_root, shipped_counterpart, shipped_results_off

PRINT_WIDTH = 76  # characters a printed line may have: the width of an output box on the page at 1280 px


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
    print(textwrap.fill(describe_sources(context.preset.name), width=PRINT_WIDTH, subsequent_indent="  "))
    if "google.colab" in sys.modules:  # ipywidgets 8 needs Colab's custom widget manager to show
        from google.colab import output

        output.enable_custom_widget_manager()
    if style:
        import seaborn as sns

        from uni_icl.book.palette import use_book_style

        sns.set_theme(context="notebook", style="whitegrid")
        use_book_style()
    return context


def plan_line(chapter, preset: Preset) -> str:
    """A line, wrapped to :data:`PRINT_WIDTH` characters: how many of ``chapter``'s models (its ``training_plan``)
    this page loads from the cache or the shipped results and how many it trains, with their training
    time as the shipped manifest records it (the machine that computed them); nothing else is timed,
    so nothing is guessed."""
    plan = chapter.training_plan(preset)
    cached = [job for job in plan if job.path.is_file()]
    shipped = [job for job in plan if not job.path.is_file() and shipped_counterpart(job.path) is not None]
    missing = len(plan) - len(cached) - len(shipped)
    manifest = None if shipped_results_off() else load_manifest(preset.name)
    entries = manifest["entries"] if manifest else {}
    root = cache_root()
    seconds = [entries.get(str(job.path.relative_to(root)), {}).get("train_seconds") for job in plan]
    recorded = [value for value in seconds if value is not None]
    if missing:
        text = f"models: this page trains {missing} of its {len(plan)} models here ({len(plan) - missing} stored)"
    else:
        text = (
            f"models: this page loads all {len(plan)} of its models ({len(cached)} from the cache, "
            f"{len(shipped)} from the shipped {preset.name} results); nothing is trained"
        )
    if recorded:
        which = "they" if len(recorded) == len(plan) else f"{len(recorded)} of them"
        text += (
            f"; trained from scratch (RETRAIN = True in the setup cell), {which} took {sum(recorded) / 60:.0f} min "
            f"of one CPU core on the machine that shipped them ({manifest['machine']}, {manifest['workers']} models "
            "at a time)"
        )
    return textwrap.fill(text, width=PRINT_WIDTH, subsequent_indent="  ")
