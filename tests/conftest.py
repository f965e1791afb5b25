"""Shared fixtures: every test gets its own empty cache folder; modules may ask for one torch thread."""

import pytest

from uni_icl.device import policy_threads


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Point the result store at a fresh temporary folder, with the shipped results ignored."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("UNI_ICL_CACHE", str(folder))
    monkeypatch.setenv("UNI_ICL_FRESH", "1")  # the shipped results (results/) stay out of a test unless it asks
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """The module's tests run on one torch thread (the package's policy, uni_icl.device.policy_threads)."""
    with policy_threads():
        yield
