"""Point the book at another repository (a fork): rewrite the URL in _config.yml and in every setup cell.

Usage: python scripts/set_repository_url.py https://github.com/<you>/<your-fork>
       python scripts/set_repository_url.py --check [URL]   # exit 1 unless configured (and equal to URL)

The URL lives in ``_config.yml`` (``repository.url``: launch and repository buttons) and is
repeated in the first code cell of every ``book/*.ipynb`` (``REPO_URL = "..."``: what Colab
installs). Both are rewritten as text, so nothing else in the files changes.
tests/test_book_config.py checks that they agree. Until it is rewritten the URL is the placeholder
``PLACEHOLDER_URL``, under which every launch, repository and issue button and every Colab setup
cell fails; ``--check`` (run by the publishing workflow against the repository it runs in, and by
tests/test_book_config.py wherever the run names its repository: see ``named_repository``) fails on it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
URL_PATTERN = re.compile(r"https://[A-Za-z0-9._~:/@%+-]+")
PLACEHOLDER_URL = "https://github.com/uni-icl/uni-icl-book"  # no such repository: rewrite it for yours
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


def configuration_problem(expected: str | None = None, root: Path = ROOT) -> str | None:
    """Why ``root``'s repository URL is not configured (the placeholder, or not ``expected``), or None."""
    url = yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"]
    if expected is not None and url != expected.rstrip("/"):
        return f"_config.yml: repository.url is {url}, not {expected}; run: python {Path(__file__).name} {expected}"
    if url == PLACEHOLDER_URL:
        return (
            f"_config.yml: repository.url is the placeholder {PLACEHOLDER_URL} (no such repository); run: "
            "python scripts/set_repository_url.py https://github.com/<you>/<your-repository>"
        )
    return None


def named_repository(environ: dict[str, str]) -> str | None:
    """The https URL of the repository a run says it belongs to, or None where nothing names one.

    ``UNI_ICL_REPOSITORY_URL`` first, then GitHub Actions' ``GITHUB_SERVER_URL``/``GITHUB_REPOSITORY``.
    A CI that runs a copy of the repository without either names none.
    """
    if environ.get("UNI_ICL_REPOSITORY_URL"):
        return environ["UNI_ICL_REPOSITORY_URL"].rstrip("/")
    if environ.get("GITHUB_REPOSITORY"):
        return f"{environ.get('GITHUB_SERVER_URL', 'https://github.com')}/{environ['GITHUB_REPOSITORY']}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="the repository's https URL, e.g. https://github.com/you/uni-icl-book")
    parser.add_argument("--check", action="store_true", help="only check the configured URL (against URL if given)")
    args = parser.parse_args(argv)
    if args.check:
        problem = configuration_problem(args.url)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
        return 0
    if not args.url:
        parser.error("url: required unless --check")
    for path in set_repository_url(args.url):
        print(f"updated {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
