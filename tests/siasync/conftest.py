"""Fixtures for the service: the app on the demo archive, through Litestar's test client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from siasync.app import create_app
from siasync.settings import Settings

TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}
#: the host name of Litestar's test client (``http://testserver.local``), which the apps must allow
TEST_HOST = "testserver.local"


def _client_factory(state_root: Callable[[], Path], archive: Path) -> Callable[..., Any]:
    """Test clients for apps with some settings changed, each keeping its state under ``state_root()``."""

    @contextmanager
    def factory(**changes: Any) -> Iterator[TestClient]:
        root = state_root()
        if changes.get("auth") == "token":
            tokens = root / "tokens.txt"
            tokens.write_text("# token owner\n" + "".join(f"{t} {o}\n" for t, o in TOKENS.items()))
            changes.setdefault("tokens_file", tokens)
        values = {"archive": archive, "state_dir": root / "state", "workers": 2, "reaper_interval_s": 0.2,
                  "allowed_hosts": (TEST_HOST,)}
        settings = Settings(**{**values, **changes})
        with TestClient(create_app(settings), base_url=f"http://{TEST_HOST}") as client:
            yield client

    return factory


@pytest.fixture
def make_client(tmp_path: Path, demo_archive: Path) -> Callable[..., Any]:
    """A factory of test clients for apps with some settings changed."""
    return _client_factory(lambda: tmp_path, demo_archive)


@pytest.fixture(scope="module")
def make_module_client(tmp_path_factory: pytest.TempPathFactory, demo_archive: Path) -> Callable[..., Any]:
    """Like `make_client`, for apps shared by a module's tests (property tests run many examples on one app);
    each app gets a state directory of its own."""
    return _client_factory(lambda: tmp_path_factory.mktemp("app"), demo_archive)


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Iterator[TestClient]:
    """The app with default settings (anonymous owners)."""
    with make_client() as c:
        yield c
