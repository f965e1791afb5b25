"""Code quoted from the package onto a page, so the page shows what ran and cannot drift from it.

:func:`show_code` displays the highlighted source of functions (a claim's ``decide_*`` rule, a
training step) as HTML with inline styles: it renders the same in the built book and on Colab,
where a MyST ``literalinclude`` would show as raw text. Its plain-text form is the source itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

STYLE = "friendly"  # a light pygments style that reads on the book's white pages and on Colab


class QuotedCode:
    """The source of some functions, with where each lives; shown as highlighted HTML in a notebook."""

    def __init__(self, functions: tuple[Callable, ...]) -> None:
        if not functions:
            raise ValueError("functions: expected at least one function to quote")
        self.parts = []
        for function in functions:
            lines, first = inspect.getsourcelines(function)
            module = inspect.getmodule(function)
            where = f"{module.__name__ if module else '?'}, line {first}"
            self.parts.append((where, "".join(lines)))

    def _repr_html_(self) -> str:
        formatter = HtmlFormatter(style=STYLE, noclasses=True, nobackground=False)
        blocks = []
        for where, source in self.parts:
            caption = f'<div style="font-size: 0.85em; color: #555;">from <code>{where}</code></div>'
            blocks.append(caption + highlight(source, PythonLexer(), formatter))
        return "\n".join(blocks)

    def __repr__(self) -> str:
        return "\n\n".join(f"# from {where}\n{source}" for where, source in self.parts)


def show_code(*functions: Callable) -> QuotedCode:
    """The highlighted source of ``functions``, quoted from the package (the last value of a cell shows it)."""
    return QuotedCode(functions)
