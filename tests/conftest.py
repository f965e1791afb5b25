"""Shared fixtures: every test gets its own empty cache folder; modules may ask for one torch thread."""

from dataclasses import replace

import pytest
import torch

from uni_icl.runtime import current_runtime, install_runtime, runtime_from_env, use_runtime


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Point the result store at a fresh temporary folder, with the shipped results ignored.

    The variables are set for the commands a test starts (each reads them at its edge), and the runtime
    they describe is installed for the code a test calls directly; a test that changes a variable
    changes the installed runtime instead (:func:`set_runtime`)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("UNI_ICL_CACHE", str(folder))
    monkeypatch.setenv("UNI_ICL_FRESH", "1")  # the shipped results (results/) stay out of a test unless it asks
    with use_runtime(runtime_from_env()):
        yield folder


@pytest.fixture
def set_runtime():
    """``set_runtime(cache=..., fresh=...)`` installs the current runtime with those fields changed, for
    the rest of the test."""

    def change(**fields) -> None:
        install_runtime(replace(current_runtime(), **fields))

    return change


@pytest.fixture(scope="module")
def one_torch_thread():
    """The module's tests run on one torch thread (the package's policy, uni_icl.device.policy_threads)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
