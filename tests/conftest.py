"""Shared fixtures: every test gets its own empty cache folder."""

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Point the result store at a fresh temporary folder."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("UNI_ICL_CACHE", str(folder))
    return folder
