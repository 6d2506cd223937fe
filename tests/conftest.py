"""Shared fixtures: offline astropy, and one demo archive per test session."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from astropy import utils
from astropy.utils import iers
from hypothesis import settings

# The machines running the suite have no internet: astropy must never try to download.
iers.conf.auto_download = False
utils.data.conf.allow_internet = False

# Property tests (and schemathesis, which runs on hypothesis) are deterministic: the same examples on every
# run and machine, no example database written into the repository, no deadline on a shared 2-core machine.
settings.register_profile("siasync", derandomize=True, database=None, deadline=None, print_blob=True)
settings.load_profile("siasync")

REPO = Path(__file__).resolve().parents[1]
_DATABASES = itertools.count()
DEMO_SETTINGS = REPO / "data" / "demo-survey.toml"


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full demo survey, generated from the committed settings and indexed."""
    from cutout.demo import generate_archive
    from cutout.index import ArchiveIndex

    root = tmp_path_factory.mktemp("demo")
    generate_archive(root, DEMO_SETTINGS)
    index, skipped = ArchiveIndex.build(root)
    assert not skipped
    index.save()
    return root


@pytest.fixture(scope="session")
def demo_index(demo_archive: Path):
    """The demo archive's index, loaded from disk as the service loads it."""
    from cutout.index import ArchiveIndex

    return ArchiveIndex.load(demo_archive)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (`deploy.postgres`); each user makes a database of its own in it."""
    from deploy.postgres import Postgres

    server = Postgres().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def new_database(postgres):
    """Make an empty database in the session's PostgreSQL server; its SQLAlchemy URL."""
    def make() -> str:
        return postgres.create_database(f"test{next(_DATABASES)}")

    return make


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true",
                     help="also collect the long variants (marked soak) of the reliability tests")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: a long variant of a reliability test, run by `make soak` (--soak)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --soak, the soak variants are deselected (not skipped): `make test` runs the fast ones only."""
    if config.getoption("--soak"):
        return
    soak = [item for item in items if item.get_closest_marker("soak")]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if not item.get_closest_marker("soak")]
