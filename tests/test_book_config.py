"""The book's configuration: Jupyter Book 1.x, forced execution that fails on errors, one repository URL."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def first_code_cell(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    return "".join(code[0]["source"]) if code else ""


def toc_files(entries) -> list[str]:
    files = []
    for entry in entries or []:
        if "file" in entry:
            files.append(entry["file"])
        for key in ("parts", "chapters", "sections"):
            files += toc_files(entry.get(key))
    return files


def load_url_script():
    spec = importlib.util.spec_from_file_location("set_repository_url", ROOT / "scripts" / "set_repository_url.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_jupyter_book_is_version_1():
    version = importlib.metadata.version("jupyter-book")
    assert int(version.split(".")[0]) == 1, f"jupyter-book {version}: version 2 is a different tool (myst.yml)"
    assert "jupyter-book>=1.0.4,<2" in (ROOT / "requirements.txt").read_text()


def test_every_notebook_is_executed_on_every_build_and_errors_fail_it():
    execute = CONFIG["execute"]
    assert execute["execute_notebooks"] == "force"  # "cache" would ignore a change of preset or package
    assert execute["raise_on_error"] is True
    assert not execute.get("allow_errors", False)
    assert execute["timeout"] >= 3600
    assert CONFIG["sphinx"]["config"]["nb_kernel_rgx_aliases"] == {".*": "python3"}


def test_only_the_book_is_built():
    assert CONFIG["only_build_toc_files"] is True
    for pattern in (".*", "tests", "uni_icl", "README.md", "_build", "scripts"):
        assert pattern in CONFIG["exclude_patterns"], f"exclude_patterns lacks {pattern!r}"


def test_every_toc_page_exists():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"], *toc_files(toc.get("parts") or toc.get("chapters"))]
    missing = [p for p in pages if not any((ROOT / f"{p}{suffix}").is_file() for suffix in (".md", ".ipynb"))]
    assert not missing, f"pages listed in _toc.yml without a file: {missing}"
    for bib in CONFIG.get("bibtex_bibfiles", []):
        assert (ROOT / bib).is_file(), f"bibtex_bibfiles names a missing file: {bib}"


def test_launch_buttons_point_at_the_repository():
    url = CONFIG["repository"]["url"]
    assert re.fullmatch(r"https://\S+", url) and "executablebooks" not in url
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["html"]["use_repository_button"] is True


def test_every_setup_cell_uses_the_repository_url_of_the_config():
    url = CONFIG["repository"]["url"]
    wrong = [
        notebook.name
        for notebook in NOTEBOOKS
        if f'REPO_URL = "{url}"' not in first_code_cell(notebook)
        or "from uni_icl.book.notebook import setup" not in first_code_cell(notebook)
    ]
    assert not wrong, (
        f"the first code cell of {wrong} is not the setup cell with REPO_URL = {url!r} (the URL of _config.yml); "
        "run: python scripts/set_repository_url.py <url>"
    )


def test_notebooks_are_stored_without_outputs_and_run_on_python3():
    for notebook in NOTEBOOKS:
        content = json.loads(notebook.read_text())
        for index, cell in enumerate(content["cells"]):
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [], f"{notebook.name}: cell {index} is stored with outputs"
                assert cell["execution_count"] is None, f"{notebook.name}: cell {index} has an execution count"
        assert content["metadata"]["kernelspec"]["name"] == "python3", f"{notebook.name}: kernel is not python3"


def test_set_repository_url_rewrites_the_config_and_every_setup_cell(tmp_path):
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    for notebook in NOTEBOOKS:
        shutil.copy(notebook, tmp_path / "book" / notebook.name)
    fork = "https://github.com/someone/uni-icl-fork"
    changed = load_url_script().set_repository_url(fork, root=tmp_path)
    assert len(changed) == 1 + len(NOTEBOOKS)
    assert yaml.safe_load((tmp_path / "_config.yml").read_text())["repository"]["url"] == fork
    for notebook in NOTEBOOKS:
        copy = tmp_path / "book" / notebook.name
        assert f'REPO_URL = "{fork}"' in first_code_cell(copy)
        assert copy.read_text().replace(fork, CONFIG["repository"]["url"]) == notebook.read_text()  # nothing else
    with pytest.raises(ValueError, match="url: expected an https:// URL"):
        load_url_script().set_repository_url('https://x.org/a" b', root=tmp_path)


CODE_LINE_LIMIT = 88  # the width of a code cell on the page, without scrolling sideways


def test_notebook_code_lines_fit_the_page():
    long = [
        f"{notebook.name} cell {cell.get('id', index)}: {len(line)} characters"
        for notebook in NOTEBOOKS
        for index, cell in enumerate(json.loads(notebook.read_text())["cells"])
        if cell["cell_type"] == "code"
        for line in "".join(cell["source"]).splitlines()
        if len(line) > CODE_LINE_LIMIT
    ]
    assert not long, f"code lines longer than {CODE_LINE_LIMIT} characters: {long}"


def test_every_notebook_ends_with_a_summary():
    """Every chapter ends with its summary (the intro, the book's root page, ends with its references)."""
    root = yaml.safe_load((ROOT / "_toc.yml").read_text())["root"]
    missing = []
    for notebook in NOTEBOOKS:
        if notebook == ROOT / f"{root}.ipynb":
            continue
        cells = json.loads(notebook.read_text())["cells"]
        headings = [
            line.strip()
            for cell in cells
            if cell["cell_type"] == "markdown"
            for line in "".join(cell["source"]).splitlines()
            if line.startswith("## ")
        ]
        if not headings or headings[-1] != "## Summary":
            missing.append(notebook.name)
    assert not missing, f"notebooks whose last section is not '## Summary': {missing}"


def test_mathjax_for_the_book_is_a_requirement():
    """The book serves MathJax from the django-static-mathjax package: requirements.txt asks for it (with
    everything else scripts/setup.sh installs), so a fresh environment can build the book offline."""
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^django-static-mathjax>=3\.2\.2,<4\b", requirements, re.MULTILINE), requirements
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "-r requirements.txt" in setup
    assert "django-static-mathjax" not in setup.replace("requirements.txt", ""), "install it from requirements.txt"


def test_the_sphinx_extension_is_light_to_import():
    """Sphinx imports the book's extension on every render: it must not pull in torch or the chapters
    (through uni_icl.book.build it did, and the render took 17.5 s instead of 9.6 s)."""
    import subprocess
    import sys

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["extra_extensions"] == ["uni_icl.book.sphinx_extension"]
    heavy = "{'torch', 'uni_icl.scorecard'}"
    probe = f"import sys, uni_icl.book.sphinx_extension; print(sorted({heavy} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_publishing_workflow_builds_the_readme_book_on_every_push_to_main():
    """The GitHub Pages workflow (it cannot run here): it parses, runs on pushes to main, refuses stale
    shipped results, builds with the README's main command and deploys the built HTML."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "publish.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads a bare `on` as True
    assert triggers["push"]["branches"] == ["main"]
    steps = workflow["jobs"]["build"]["steps"]
    commands = "\n".join(step.get("run", "") for step in steps)
    main_command = "bash scripts/build_book.sh"
    assert main_command in commands and main_command in (ROOT / "README.md").read_text()
    assert "results status --preset quick" in commands and "every chapter is current" in commands
    assert 'set_repository_url.py --check "$GITHUB_SERVER_URL/$GITHUB_REPOSITORY"' in commands
    assert any(step.get("with", {}).get("path") == "_build/html" for step in steps)
    assert any(step.get("uses", "").startswith("actions/deploy-pages") for step in workflow["jobs"]["deploy"]["steps"])


CLAIM_PAGES = {
    "01_expressivity": "expressivity",
    "02_learnability": "learnability",
    "03_selection": "selection",
    "04_shift": "shift",
    "05_curriculum": "curriculum",
    "06_m2icl": "m2icl",
}


def test_every_claim_page_quotes_its_decision_rule_from_the_rules_module():
    from uni_icl.experiments import rules

    for page, module in CLAIM_PAGES.items():
        cells = json.loads((ROOT / "book" / f"{page}.ipynb").read_text())["cells"]
        code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        assert f"from uni_icl.experiments.rules import {module} as rules" in code, page
        quoted = re.findall(r"rules\.(decide\w*)", code)
        assert quoted, f"{page} quotes no decide_* function"
        chapter_rules = importlib.import_module(f"{rules.__name__}.{module}")
        assert all(callable(getattr(chapter_rules, name)) for name in quoted), page


def test_quoted_code_is_the_functions_highlighted_source():
    from uni_icl.book.quote import show_code
    from uni_icl.experiments.rules.selection import decide_3a

    quoted = show_code(decide_3a)
    html = quoted._repr_html_()
    assert "decide_3a" in html and "uni_icl.experiments.rules.selection" in html
    assert "style=" in html  # inline styles: renders on Colab and in the book without a stylesheet
    assert "def decide_3a" in repr(quoted)


def test_the_repository_url_check_fails_on_the_placeholder_and_on_another_repository(tmp_path):
    script = load_url_script()
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "book").mkdir()
    script.set_repository_url(script.PLACEHOLDER_URL, root=tmp_path)
    assert "placeholder" in script.configuration_problem(root=tmp_path)
    fork = "https://github.com/someone/uni-icl-fork"
    script.set_repository_url(fork, root=tmp_path)
    assert script.configuration_problem(root=tmp_path) is None
    assert script.configuration_problem(fork, root=tmp_path) is None
    other = "https://github.com/other/repo"
    assert f"not {other}" in script.configuration_problem(other, root=tmp_path)


def test_the_repository_url_is_the_repository_the_run_belongs_to():
    """Where the run names its repository (UNI_ICL_REPOSITORY_URL, or GitHub Actions), the book's URL
    must be it, never the placeholder. A CI that runs a copy of the repository names none, so there is
    nothing to compare with: skipped, saying how to name one."""
    script = load_url_script()
    expected = script.named_repository(dict(os.environ))
    if expected is None:
        pytest.skip("no repository named (set UNI_ICL_REPOSITORY_URL) to check the book's URL against")
    problem = script.configuration_problem(expected)
    assert problem is None, problem


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"UNI_ICL_REPOSITORY_URL": "https://github.com/a/b/", "GITHUB_REPOSITORY": "c/d"}, "https://github.com/a/b"),
        ({"GITHUB_REPOSITORY": "a/b"}, "https://github.com/a/b"),
        ({"GITHUB_REPOSITORY": "a/b", "GITHUB_SERVER_URL": "https://ghe.example"}, "https://ghe.example/a/b"),
        ({"CI": "1"}, None),
    ],
)
def test_the_run_names_its_repository_from_its_environment(environ, named):
    assert load_url_script().named_repository(environ) == named


def test_a_plain_jupyter_book_build_refuses_with_one_line(tmp_path):
    """`jupyter-book build .` would execute the notebooks live (machine paths, widget views): the book's
    Sphinx extension stops it before any page is read, with one line and exit status 2."""
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "book", tmp_path / "book")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [str(jupyter_book), "build", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "scripts/build_book.sh" in errors[0], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "_build" / "html" / "book").exists()
