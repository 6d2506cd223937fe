"""A parent rewritten in place after it was indexed is refused, by jobs (a warning naming it), by synchronous
cutouts and by the archive's file and preview (an error naming it), never served as what the index describes."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from astropy.io import fits

from cutout.index import ArchiveIndex
from cutout.sky import Field
from tests.siasync.helpers import create_job, wait_for

FIELD = {"POS": "150.1,2.2", "SIZE": "0.01"}


def test_a_parent_changed_in_place_is_refused_with_a_warning(make_client, demo_index: ArchiveIndex,
                                                               tmp_path: Path) -> None:
    source = demo_index.lookup(Field(150.1, 2.2, 0.01, 0.01))[0]
    root = tmp_path / "archive"
    (root / "w").mkdir(parents=True)
    shutil.copy2(demo_index.path_of(source), root / "w" / "p.fits")
    index, _ = ArchiveIndex.build(root, workers=1)
    index.save()
    record = index.records[0]
    with make_client(archive=root, workers=1) as client:
        first = create_job(client, {**FIELD, "PHASE": "RUN"})
        wait_for(client, first, ("COMPLETED",), timeout=60)
        with fits.open(index.path_of(record), mode="update") as hdul:  # rewritten in place, as long as it was
            hdul[record.hdu].header["OBSERVER"] = "changed"
        os.utime(index.path_of(record), ns=(record.mtime_ns + 10**9,) * 2)

        second = create_job(client, {**FIELD, "PHASE": "RUN"})
        wait_for(client, second, ("COMPLETED",), timeout=60)
        document = client.get(f"/async/{second}", headers={"Accept": "application/json"}).json()
        assert [r["id"] for r in document["results"]] == ["table"]  # no product of the changed parent
        assert [v for k, v in document["jobInfo"].items() if k.startswith("warning")] == [
            f"image {record.id} (w/p.fits) skipped: w/p.fits changed since it was indexed (its modification time "
            f"from {_iso(record.mtime_ns)} to {_iso(record.mtime_ns + 10**9)}); it is not served until the archive "
            "is indexed again (siasync archive index)"]

        response = client.get("/sia/cutout", params={**FIELD, "ID": record.id})
        assert response.status_code == 500
        assert response.text.startswith(f"ArchiveError: image {record.id} cannot be cut: w/p.fits changed since it "
                                        "was indexed (its modification time from ")
        for path in (f"/archive/{record.id}", f"/archive/{record.id}/preview"):
            response = client.get(path)
            assert response.status_code == 500, path
            assert response.text.startswith(f"ArchiveError: image {record.id} cannot be served: w/p.fits changed "
                                            "since it was indexed (its modification time from "), response.text


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
