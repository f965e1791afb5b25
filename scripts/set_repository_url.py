"""Point the book at another repository (a fork): rewrite the URL in _config.yml and in every setup cell.

Usage: python scripts/set_repository_url.py https://github.com/<you>/<your-fork>

The URL lives in ``_config.yml`` (``repository.url``: launch and repository buttons) and is
repeated in the first code cell of every ``book/*.ipynb`` (``REPO_URL = "..."``: what Colab
installs). Both are rewritten as text, so nothing else in the files changes.
tests/test_book_config.py checks that they agree.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
URL_PATTERN = re.compile(r"https://[A-Za-z0-9._~:/@%+-]+")
SETUP_LINE = re.compile(r'(REPO_URL = \\")([^"\\]*)(\\")')  # as stored in the notebook's JSON


def set_repository_url(url: str, root: Path = ROOT) -> list[Path]:
    """Rewrite the repository URL in ``root``'s _config.yml and notebooks; return the files changed."""
    url = url.rstrip("/")
    if not URL_PATTERN.fullmatch(url):
        raise ValueError(f"url: expected an https:// URL without spaces or quotes, got {url!r}")
    config_path = root / "_config.yml"
    old = yaml.safe_load(config_path.read_text())["repository"]["url"]
    changed = []
    text = config_path.read_text()
    new_text = re.sub(rf"(^\s+url:\s*){re.escape(old)}\s*$", rf"\g<1>{url}", text, count=1, flags=re.MULTILINE)
    if yaml.safe_load(new_text)["repository"]["url"] != url:
        raise ValueError(f"_config.yml: could not find the line 'url: {old}' under repository")
    if new_text != text:
        config_path.write_text(new_text)
        changed.append(config_path)
    for notebook in sorted((root / "book").glob("*.ipynb")):
        text = notebook.read_text()
        new_text = SETUP_LINE.sub(lambda match: f"{match[1]}{url}{match[3]}", text)
        if new_text != text:
            notebook.write_text(new_text)
            changed.append(notebook)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the repository's https URL, e.g. https://github.com/you/uni-icl-book")
    for path in set_repository_url(parser.parse_args().url):
        print(f"updated {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
