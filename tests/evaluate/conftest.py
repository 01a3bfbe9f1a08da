import pytest

from tests.engines.conftest import box, tiny_model  # noqa: F401  (the sandbox and model fixtures)


@pytest.fixture(autouse=True)
def _calibration_cache(tmp_path_factory, monkeypatch):
    """Each test calibrates time limits into a cache of its own ($XDG_CACHE_HOME), not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
