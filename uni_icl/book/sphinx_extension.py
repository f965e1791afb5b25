"""The book's Sphinx extension (``_config.yml``: ``sphinx: extra_extensions``).

- MathJax is served with the book: the pages load ``_static/mathjax/tex-mml-chtml.js``, copied
  from the ``django-static-mathjax`` package (MathJax 3, Apache-2.0, its licence copied beside
  it), so formulas render offline and no page asks a CDN for MathJax.
- Only the book's own build renders it: ``python -m uni_icl.book.build`` (what
  ``scripts/build_book.sh`` runs) executes the notebooks in static mode (no machine paths, no live
  widgets) and hands Jupyter Book a copy with execution off. A plain ``jupyter-book build .`` would
  execute them itself, live, and give other pages; it stops at once with one line saying so.
- Wide cell outputs (a table with many columns) scroll sideways inside the text column instead of
  being cut off: a small style sheet, ``_static/uni_icl_book.css``, written with the book.
- Citations read author-year with round brackets: the reference style ``author_year_round``
  (``{cite:t}`` gives "Akyürek et al. (2023)", ``{cite}`` and ``{cite:p}`` give
  "(Akyürek et al., 2023)") and the bibliography style ``author_year`` (entries sorted by author,
  labelled "Akyürek et al., 2023" instead of "AkyurekSA+23").

Its own module, apart from :mod:`uni_icl.book.build`: Sphinx imports it on every render, and the
build module imports torch and every chapter (8 s of a 17 s render, measured).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

MATHJAX_PACKAGE = "django-static-mathjax"  # on PyPI; installs the Python package "mathjax"
MATHJAX_SCRIPT = "tex-mml-chtml.js"  # the combined component Sphinx loads by default, from a CDN
MATHJAX_STATIC = "mathjax"  # its folder under the built book's _static/
# Combined components and outputs the pages never load (SVG output, other input sets): left out.
MATHJAX_UNUSED = ("tex-chtml*.js", "tex-svg*.js", "tex-mml-svg.js", "mml-*.js", "node-main.js", "svg", "svg.js")


def mathjax_files() -> tuple[Path, Path]:
    """(the MathJax 3 ``es5`` folder, its LICENSE file) of the installed ``django-static-mathjax``."""
    try:
        import mathjax  # the Python package of django-static-mathjax: static files only
    except ImportError as error:
        raise RuntimeError(
            f"MathJax for the book is missing: pip install {MATHJAX_PACKAGE} (see scripts/setup.sh)"
        ) from error
    base = Path(mathjax.__file__).parent / "static" / "mathjax"
    es5, licence = base / "es5", base / "LICENSE"
    if not (es5 / MATHJAX_SCRIPT).is_file() or not licence.is_file():
        raise RuntimeError(f"{base}: no es5/{MATHJAX_SCRIPT} or LICENSE; reinstall {MATHJAX_PACKAGE}")
    return es5, licence


def copy_mathjax(html_dir: Path) -> Path:
    """Copy MathJax (and its licence) into ``html_dir/_static/mathjax``; returns that folder."""
    es5, licence = mathjax_files()
    target = html_dir / "_static" / MATHJAX_STATIC
    shutil.copytree(es5, target, ignore=shutil.ignore_patterns(*MATHJAX_UNUSED), dirs_exist_ok=True)
    shutil.copy2(licence, target / "LICENSE")
    return target


PLAIN_BUILD_REFUSAL = (
    "this book is built by `bash scripts/build_book.sh` (python -m uni_icl.book.build), which executes the "
    "notebooks for static pages; a plain `jupyter-book build .` would execute them live (machine paths and "
    "widget views in the pages)"
)


def refuse_executing_build(app, config) -> None:
    """Stop a render that would execute the notebooks itself (execution mode not 'off'): only the book's
    build, which executes them in static mode first, renders the book. One line on stderr and exit
    status 2 (a SystemExit, which Jupyter Book does not wrap in a traceback)."""
    if config.nb_execution_mode != "off":
        print(f"error: {PLAIN_BUILD_REFUSAL}", file=sys.stderr)
        raise SystemExit(2)


def _serve_mathjax_locally(app, config) -> None:
    mathjax_files()  # fail at the start of the build, not after it, when MathJax is missing
    config.mathjax_path = f"{MATHJAX_STATIC}/{MATHJAX_SCRIPT}"  # relative: under _static/


BOOK_CSS = "uni_icl_book.css"  # under the built book's _static/
BOOK_CSS_TEXT = (
    "/* the book's own rules (uni_icl.book.sphinx_extension) */\n"
    "div.cell_output { overflow-x: auto; }\n"
    # a number and its interval stay on one line ("0.918 ± 0.004"): a wide table scrolls instead of wrapping
    "div.cell_output table.dataframe td, div.cell_output table.dataframe th { white-space: nowrap; }\n"
)


def _copy_mathjax_when_built(app, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        copy_mathjax(Path(app.outdir))
        (Path(app.outdir) / "_static" / BOOK_CSS).write_text(BOOK_CSS_TEXT)


def author_year_label(entry) -> str:
    """The bibliography label of a pybtex entry, LaTeX decoded: "Wu et al., 2025", "Finn, 2017"."""
    from pybtex.richtext import Text

    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [Text.from_latex(" ".join(p.prelast_names + p.last_names)).render_as("text") for p in persons]
    if len(names) > 2 or (len(names) == 2 and names[1] == "others"):
        authors = f"{names[0]} et al."
    else:
        authors = " and ".join(names) or entry.key
    return f"{authors}, {entry.fields.get('year', 'n.d.')}"


def _register_citation_styles() -> None:
    """Register the styles ``author_year_round`` (sphinxcontrib-bibtex) and ``author_year`` (pybtex)."""
    import dataclasses

    import pybtex.plugin
    from pybtex.style.formatting.plain import Style as PlainStyle
    from pybtex.style.labels import BaseLabelStyle
    from sphinxcontrib.bibtex.plugin import register_plugin
    from sphinxcontrib.bibtex.style.referencing import BracketStyle
    from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle

    def round_brackets() -> BracketStyle:
        return BracketStyle(left="(", right=")")

    fields = ("bracket_textual", "bracket_parenthetical", "bracket_author", "bracket_label", "bracket_year")
    round_style = dataclasses.make_dataclass(
        "AuthorYearRoundReferenceStyle",
        [(name, BracketStyle, dataclasses.field(default_factory=round_brackets)) for name in fields],
        bases=(AuthorYearReferenceStyle,),
    )
    register_plugin("sphinxcontrib.bibtex.style.referencing", "author_year_round", round_style, force=True)

    class AuthorYearLabels(BaseLabelStyle):
        def format_labels(self, sorted_entries):
            for entry in sorted_entries:
                yield author_year_label(entry)

    class AuthorYearStyle(PlainStyle):
        default_label_style = "author_year"  # PlainStyle sorts by author, year, title

    pybtex.plugin.register_plugin("pybtex.style.labels", "author_year", AuthorYearLabels, force=True)
    pybtex.plugin.register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle, force=True)


def setup(app) -> dict:
    """Sphinx extension: only the book's build renders; MathJax from ``_static/mathjax`` (never a CDN);
    author-year citation styles."""
    _register_citation_styles()
    app.connect("config-inited", refuse_executing_build)
    app.connect("config-inited", _serve_mathjax_locally)
    app.connect("build-finished", _copy_mathjax_when_built)
    app.add_css_file(BOOK_CSS)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
