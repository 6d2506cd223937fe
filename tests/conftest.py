"""Shared fixtures: offline astropy, and one demo archive per test session."""

from __future__ import annotations

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
