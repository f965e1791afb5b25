"""The runtime: read from the environment in one place, at the edge, and passed down.

No module of the package below the edge touches the environment; every ``UNI_ICL_*`` variable is
checked by :func:`~uni_icl.runtime.runtime_from_env` with one line naming it; code run without an
installed runtime says how to install one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from uni_icl import runtime as runtime_module
from uni_icl.runtime import (
    DEFAULT_CACHE,
    REPOSITORY_RESULTS,
    Runtime,
    current_runtime,
    runtime_from_env,
    usable_cores,
    use_runtime,
)
from uni_icl.storage import cache_root

PACKAGE = Path(__file__).resolve().parents[1] / "uni_icl"
# the modules that may touch os.environ: the runtime and the preset (each reads its variables), and
# the book build, which hands two variables to the notebook kernels it starts
ENVIRONMENT_READERS = {"runtime.py", "presets.py", "book/build.py"}


def environment_uses(source: str) -> list[int]:
    """The lines of ``source`` that use ``os.environ``, ``os.getenv``, ``os.putenv`` or import them."""
    names = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
    lines = []
    for node in ast.walk(ast.parse(source)):
        attribute = isinstance(node, ast.Attribute) and node.attr in names and getattr(node.value, "id", None) == "os"
        imported = isinstance(node, ast.ImportFrom) and node.module == "os" and {a.name for a in node.names} & names
        if attribute or imported:
            lines.append(node.lineno)
    return sorted(lines)


def test_no_module_below_the_edge_reads_the_environment():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = str(path.relative_to(PACKAGE))
        if module not in ENVIRONMENT_READERS and (lines := environment_uses(path.read_text())):
            found[module] = lines
    assert found == {}, f"modules that touch os.environ below the edge (read it in uni_icl.runtime): {found}"
    assert environment_uses("import os\nos.environ.get('UNI_ICL_CACHE')\nfrom os import getenv") == [2, 3]


def test_the_environment_gives_the_runtime_it_names(tmp_path):
    default = runtime_from_env({})
    assert default == Runtime() and (default.cache, default.shipped) == (DEFAULT_CACHE, REPOSITORY_RESULTS)
    assert (default.fresh, default.read_log, default.threads, default.workers) == (False, None, 1, usable_cores())
    assert default.scheduler is None  # the process pool
    environ = {
        "UNI_ICL_CACHE": str(tmp_path / "cache"),
        "UNI_ICL_SHIPPED": str(tmp_path / "shipped"),
        "UNI_ICL_FRESH": "1",
        "UNI_ICL_READ_LOG": str(tmp_path / "reads.log"),
        "UNI_ICL_THREADS": "2",
        "UNI_ICL_WORKERS": "1",
        "UNI_ICL_BOOK_BUILD": "1",
        "UNI_ICL_CONFIRM_CPU_PAPER": "1",
        "UNI_ICL_SCHEDULER": "tcp://login1:8786",
    }
    expected = Runtime(
        cache=tmp_path / "cache",
        shipped=tmp_path / "shipped",
        fresh=True,
        read_log=tmp_path / "reads.log",
        threads=2,
        workers=1,
        static_pages=True,
        confirm_cpu_paper=True,
        scheduler="tcp://login1:8786",
    )
    assert runtime_from_env(environ) == expected
    assert runtime_from_env({"UNI_ICL_SCHEDULER": " local "}).scheduler == "local"
    assert runtime_from_env({"UNI_ICL_FRESH": "0", "UNI_ICL_SHIPPED": "", "UNI_ICL_READ_LOG": ""}) == runtime_from_env(
        {}
    )


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("UNI_ICL_CACHE", " ", "allowed: a folder path"),
        ("UNI_ICL_FRESH", "yes", "allowed: 1 (ignore the shipped results) or 0"),
        ("UNI_ICL_BOOK_BUILD", "true", "allowed: 1"),
        ("UNI_ICL_CONFIRM_CPU_PAPER", "y", "allowed: 1"),
        ("UNI_ICL_THREADS", "0", "allowed: a positive integer"),
        ("UNI_ICL_WORKERS", "many", "allowed: a positive integer"),
        ("UNI_ICL_SCHEDULER", "login1:8786", "allowed: local (a Dask LocalCluster here) or a scheduler's address"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it_and_what_it_allows(name, value, allowed):
    with pytest.raises(ValueError, match=f"^{name}: .*{re.escape(allowed)}") as error:
        runtime_from_env({name: value})
    assert "\n" not in str(error.value)


def test_the_installed_runtime_is_what_the_store_uses_and_is_restored_after(tmp_path):
    outer = current_runtime()
    with use_runtime(Runtime(cache=tmp_path / "inner")) as inner:
        assert cache_root() == tmp_path / "inner" and current_runtime() is inner
    assert current_runtime() is outer


def test_without_an_installed_runtime_the_package_says_how_to_install_one(monkeypatch):
    monkeypatch.setattr(runtime_module, "_active", None)
    with pytest.raises(RuntimeError, match=r"use_runtime\(runtime_from_env\(\)\)"):
        cache_root()


def test_the_device_is_cuda_when_present():
    assert runtime_from_env({}).device.type == ("cuda" if torch.cuda.is_available() else "cpu")
