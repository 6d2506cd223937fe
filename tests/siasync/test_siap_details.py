"""SIAP 1.0 details: SIZE=0, FORMAT=GRAPHIC-ALL, PixFlags, UCDs, MODE on /sia, and valid VOTables everywhere."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from astropy.io import fits
from astropy.io.votable import parse as parse_votable
from astropy.io.votable import ucd as ucd_module
from astropy.io.votable.exceptions import W06
from litestar.testing import TestClient

from cutout.index import ArchiveIndex
from cutout.siap import COLUMNS
from cutout.sky import Field
from tests.siasync.helpers import create_job, wait_for

BASE = "http://testserver.local"
FIELD = {"POS": "150.1,2.2", "SIZE": "0.05"}


def strict(document: bytes) -> Any:
    """Parse with astropy: no warning but those the SIAP 1.0 UCD1 words force (W06)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = parse_votable(io.BytesIO(document), verify="warn")
    assert all(isinstance(w.message, W06) for w in caught), [str(w.message) for w in caught]
    return table


def rows(client: TestClient, params: dict) -> Any:
    response = client.get("/sia", params=params)
    assert response.status_code == 200
    table = strict(response.content)
    info = next(i for i in table.resources[0].infos if i.name == "QUERY_STATUS")
    assert info.value == "OK", info.content
    return table.get_first_table().array


def test_every_column_ucd_is_ucd1plus_or_a_siap_1_0_word() -> None:
    for column in COLUMNS:
        if column.ucd.startswith("VOX:") or column.ucd in ("POS_EQ_RA_MAIN", "POS_EQ_DEC_MAIN", "INST_ID"):
            continue  # the UCD1 words SIAP 1.0 prescribes
        assert ucd_module.check_ucd(column.ucd, check_controlled_vocabulary=True), column


def test_size_zero_gives_the_whole_images_that_contain_pos(client: TestClient, demo_index: ArchiveIndex) -> None:
    found = rows(client, {"POS": "150.1,2.2", "SIZE": "0", "FORMAT": "image/fits"})
    expected = demo_index.lookup(Field(150.1, 2.2, 0.0, 0.0))
    assert list(found["parent_id"]) == [r.id for r in expected] and len(expected) >= 4
    for row in found[:3]:
        record = demo_index.by_id[row["parent_id"]]
        assert list(row["naxis"]) == [record.shape[1], record.shape[0]]
        response = client.get(row["access_url"])
        assert response.status_code == 200 and row["filesize"] == len(response.content)
        with fits.open(io.BytesIO(response.content)) as hdul:
            with fits.open(demo_index.path_of(record)) as parent:
                np.testing.assert_array_equal(hdul[0].data, parent[record.hdu].data)
    assert client.get("/sia", params={"POS": "10,10", "SIZE": "0"}).text.count("<TR>") == 0
    job = create_job(client, {"POS": "150.1,2.2", "SIZE": "0", "PHASE": "RUN"})
    assert wait_for(client, job, ("COMPLETED", "ERROR"), timeout=120) == "COMPLETED"
    results = client.get(f"/async/{job}", headers={"Accept": "application/json"}).json()["results"]
    assert sorted(r["id"] for r in results if r["id"] != "table") == sorted(
        f"00000.{r.id}.fits" for r in expected)
    mosaic = client.get("/sia", params={"POS": "150.1,2.2", "SIZE": "0", "MODE": "mosaic"}).text
    assert 'value="ERROR"' in mosaic and "SIZE: SIZE=0" in mosaic


def test_graphic_all_and_pixflags(client: TestClient, demo_index: ArchiveIndex) -> None:
    graphic = rows(client, {**FIELD, "FORMAT": "GRAPHIC-ALL", "VERB": "2"})
    assert set(graphic["format"]) == {"image/png", "image/jpeg"} and set(graphic["pixflags"]) == {"V"}
    every = rows(client, {**FIELD, "FORMAT": "ALL", "VERB": "2"})
    flags = dict(zip(every["format"], every["pixflags"], strict=False))
    assert flags == {"image/fits": "C", "image/png": "V"}
    jpeg = client.get(graphic["access_url"][1])
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"


def test_mode_on_sia_describes_the_products_a_job_stages(client: TestClient) -> None:
    params = {"POS": "150.1,2.2", "SIZE": "0.03", "MODE": "mosaic", "COLLECTION": "DEMO-WIDE",
              "FORMAT": "image/fits"}
    found = rows(client, {**params, "VERB": "3"})
    assert list(found["bandpass_id"]) == ["g", "r", "i"] and set(found["pixflags"]) == {"F"}
    job = create_job(client, {**params, "PHASE": "RUN"})
    assert wait_for(client, job, ("COMPLETED", "ERROR"), timeout=180) == "COMPLETED"
    for row in found:
        query = dict(parse_qsl(urlsplit(row["access_url"]).query))
        assert query["MODE"] == "mosaic" and query["PRODUCT"] == f"mosaic-{row['bandpass_id']}"
        made = client.get(row["access_url"])
        staged = client.get(f"/async/{job}/results/00000.mosaic-{row['bandpass_id']}.fits")
        assert made.status_code == 200 and made.content == staged.content  # byte for byte
        header = fits.getheader(io.BytesIO(made.content))
        assert list(row["naxis"]) == [header["NAXIS1"], header["NAXIS2"]]
    stack = rows(client, {**params, "MODE": "stack", "FORMAT": "ALL", "VERB": "2"})
    assert list(stack["format"]) == ["image/fits", "image/png"] and list(stack["pixflags"]) == ["F", "V"]
    wrong = client.get("/sia/cutout", params={**params, "PRODUCT": "mosaic-z"})
    assert wrong.status_code == 400 and wrong.text.startswith("UsageError: PRODUCT")


def test_every_votable_the_service_answers_parses_cleanly(client: TestClient, tmp_path: Path) -> None:
    documents = [client.get("/sia", params=p).content for p in (
        FIELD, {**FIELD, "VERB": "3"}, {"FORMAT": "METADATA"}, {"POS": "abc", "SIZE": "1"},
        {**FIELD, "MODE": "stack"}, {"POS": "150.1,2.2", "SIZE": "0"})]
    job = create_job(client, {**FIELD, "FORMAT": "ALL", "PHASE": "RUN"})
    assert wait_for(client, job, ("COMPLETED", "ERROR"), timeout=120) == "COMPLETED"
    documents.append(client.get(f"/async/{job}/results/table").content)
    for document in documents:
        strict(document)


def test_row_templates_render_what_the_table_renders(demo_index: ArchiveIndex) -> None:
    """/sia rows (pre-rendered templates, cut to the VERB) are the job table's rows, cut down."""
    from cutout.siap import cutout_metadata
    from siasync.vo.sia import RowTemplates, cutout_path
    from siasync.vo.sia_votable import VERB_COLUMNS, select_cells
    from storage.table import render_row

    templates, field = RowTemplates(), Field(150.1, 2.2, 0.3, 0.2)
    for record in demo_index.lookup(field):
        geometry = demo_index.geometry(record)
        box = geometry.box(field)
        for columns in VERB_COLUMNS.values():
            for mime in ("image/fits", "image/png", "image/jpeg"):
                path = cutout_path(record.id, field, mime)
                expected = render_row(cutout_metadata(record, geometry, box, field, 0, mime, None, None), path)
                assert templates.render(record, geometry, box, field, mime, path, columns) == \
                    select_cells(expected, columns)


def test_sia_never_answers_500(demo_index: ArchiveIndex, monkeypatch: Any) -> None:
    """An image that cannot be described is left out with an INFO naming it; any other failure is an ERROR VOTable."""
    import asyncio
    import dataclasses

    from siasync.app import limits_for
    from siasync.settings import Settings
    from siasync.vo import sia as sia_module

    field = Field(150.1, 2.2, 0.02, 0.02)
    good, bad = demo_index.lookup(field)[:2]
    broken = ArchiveIndex(demo_index.root, [good, dataclasses.replace(bad, wcs_header="not a WCS at all")])
    service = sia_module.SiaService(broken, limits_for(Settings(), broken), 1, 100)
    body = asyncio.run(service.query([("POS", "150.1,2.2"), ("SIZE", "0.02"), ("FORMAT", "image/fits")], BASE))
    table = strict(body.encode())
    assert [row["parent_id"] for row in table.get_first_table().array] == [good.id]
    omitted = [i for i in table.resources[0].infos if i.name == "OMITTED"]
    assert [i.value for i in omitted] == [bad.id] and bad.path in omitted[0].content

    def explode(*args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(sia_module, "answer", explode)
    body = asyncio.run(service.query([("POS", "150.1,2.2"), ("SIZE", "0.02")], BASE))
    info = next(i for i in strict(body.encode()).resources[0].infos if i.name == "QUERY_STATUS")
    assert info.value == "ERROR" and "boom" in info.content
