"""The pages at any size: a 10,000-field job's page, its filters and views, the table's page, the sky pictures,
errors as pages for browsers, the offline API reference, and pages ready for a strict Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import lxml.etree
import lxml.html
import pytest

from storage.jobs import Product, TableRow
from storage.table import render_row
from tests.siasync.helpers import create_job, in_app, service

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
FIELDS = 10_000
#: products per field: 4 images, each as FITS and PNG, as FORMAT=ALL makes them
IMAGES_PER_FIELD = 4


def html(client, path: str, status: int = 200, **params: Any) -> lxml.html.HtmlElement:
    response = client.get(path, params=params, headers=BROWSER)
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    return lxml.html.fromstring(response.text)


def position(i: int) -> tuple[float, float]:
    return 149.65 + (i % 100) * 0.009, 1.75 + (i // 100) * 0.009


@pytest.fixture(scope="module")
def big(make_module_client) -> Iterator[tuple[Any, str, list]]:
    """A 10,000-field FORMAT=ALL job whose 80,000 products are registered through the store as the scheduler
    registers them (cutting them would take minutes): (client, job id, the images of each field)."""
    with make_module_client() as client:
        positions = "\n".join("%.4f,%.4f" % position(i) for i in range(FIELDS))
        job_id = create_job(client, {"POS": positions, "SIZE": "0.01", "FORMAT": "ALL", "COLLECTION": "DEMO-WIDE"})
        store = service(client).store
        records = [r for r in client.app.state.index.records if r.collection == "DEMO-WIDE"]
        # results are registered only while it runs; as this server's, so that its scheduler never claims it
        in_app(client, store.update, job_id, phase="EXECUTING", runner=service(client).executor.runners.id)
        chosen = []
        for start in range(0, FIELDS, 1000):
            products, rows = [], []
            for field in range(start, start + 1000):
                images = [records[(field + k * 7) % len(records)] for k in range(IMAGES_PER_FIELD)]
                chosen.append(images)
                for record in images:
                    for mime, ext in (("image/fits", "fits"), ("image/png", "png")):
                        name = f"{field:05d}.{record.id}.{ext}"
                        products.append(Product(name, 1000 + field, mime, {"field": field, "image": record.id}))
                        values = {"title": name, "field": field, "collection": record.collection, "format": mime,
                                  "bandpass_id": record.band, "parent_id": record.id, "result_id": name}
                        rows.append(TableRow(field, record.id, name, render_row(values, f"/async/{job_id}/results/"
                                                                                         f"{name}")))
            in_app(client, store.register, job_id, products, rows)
        in_app(client, store.update, job_id, phase="COMPLETED", start_time=datetime.now(UTC) - timedelta(minutes=5),
               end_time=datetime.now(UTC), info={"fields_total": FIELDS, "fields_done": FIELDS,
                                                  "products": FIELDS * IMAGES_PER_FIELD * 2, "bytes": 123456789})
        yield client, job_id, chosen


def test_a_10000_field_job_page_is_small_and_shows_its_first_fields_grouped(big) -> None:
    client, job_id, chosen = big
    response = client.get(f"/async/{job_id}", headers=BROWSER)
    assert response.status_code == 200
    assert len(response.content) < 300_000, len(response.content)
    doc = lxml.html.fromstring(response.text)
    sections = doc.xpath("//section[@class='field']")
    assert [s.get("data-field") for s in sections] == [str(i) for i in range(25)]
    for section in sections[:3]:
        field = int(section.get("data-field"))
        assert [li.get("data-image") for li in section.xpath(".//li")] == [r.id for r in chosen[field]]
        ra, dec = position(field)
        assert f"RA {ra:.5f}°, Dec {dec:+.5f}°" in section.text_content()
        assert len(section.xpath(".//img[@class='thumb']")) == IMAGES_PER_FIELD
    facts = dict(zip(doc.xpath("//dl[@class='facts']//dt/text()"), doc.xpath("//dl[@class='facts']//dd/text()")))
    assert facts["Fields"] == str(FIELDS)  # summarised: the 10,000 positions are not printed
    assert "149.6500,1.7500" not in response.text
    assert doc.xpath("//a[@href=$h]", h=f"/async/{job_id}/parameters")  # the full list is one link away
    assert doc.xpath("//nav[@class='pager']//span/text()")[0] == f"Page 1 of {FIELDS // 25}"


def test_paging_filters_and_the_grid_view(big) -> None:
    client, job_id, chosen = big
    last = html(client, f"/async/{job_id}", PAGE=str(FIELDS // 25))
    assert [s.get("data-field") for s in last.xpath("//section[@class='field']")] == [
        str(i) for i in range(FIELDS - 25, FIELDS)]
    assert not last.xpath("//a[@rel='next']") and last.xpath("//a[@rel='prev']")
    g_fields = [f for f, images in enumerate(chosen) if any(r.band == "g" for r in images)]
    filtered = html(client, f"/async/{job_id}", BAND="g", PAGE="2")
    shown = [int(s.get("data-field")) for s in filtered.xpath("//section[@class='field']")]
    assert shown == g_fields[25:50]
    for section in filtered.xpath("//section[@class='field']"):
        images = [li.get("data-image") for li in section.xpath(".//li")]
        expected = [r.id for r in chosen[int(section.get("data-field"))] if r.band == "g"]
        assert images == expected
    options = filtered.xpath("//select[@name='BAND']/option/text()")
    counts = {b: sum(2 for images in chosen for r in images if r.band == b) for b in ("g", "i", "r")}
    assert options == ["all"] + [f"{b} ({n})" for b, n in sorted(counts.items())]
    grid = html(client, f"/async/{job_id}", VIEW="grid")
    tiles = grid.xpath("//section[@data-field='0']//ul[@class='grid']/li")
    assert len(tiles) == IMAGES_PER_FIELD and all(t.xpath(".//img[@class='thumb']") for t in tiles)
    assert tiles[0].xpath(".//a/@href")[0].endswith(".fits")  # the preview opens the FITS


@pytest.mark.parametrize(("params", "param"), [
    ({"PAGE": "0"}, "PAGE"), ({"PAGE": "401"}, "PAGE"), ({"PAGE": "two"}, "PAGE"), ({"VIEW": "table"}, "VIEW"),
    ({"BAND": "z"}, "BAND"), ({"COLLECTION": "NOPE"}, "COLLECTION"), ({"PAGE": ["1", "2"]}, "PAGE")])
def test_bad_page_parameters_answer_400_naming_them(big, params, param) -> None:
    client, job_id, _ = big
    doc = html(client, f"/async/{job_id}", status=400, **params)
    assert doc.get_element_by_id("form-error").text_content().startswith(f"UsageError: {param}: ")
    assert client.get(f"/async/{job_id}", params=params).status_code == 200  # the UWS document ignores them


def test_the_table_has_a_page_for_browsers_and_stays_a_votable_for_others(big) -> None:
    client, job_id, chosen = big
    votable = client.get(f"/async/{job_id}/results/table")
    assert votable.headers["content-type"].startswith("text/xml;content=x-votable")
    assert votable.text.count("<TR>") == FIELDS * IMAGES_PER_FIELD * 2
    assert client.get(f"/async/{job_id}/results/table", params={"RESPONSEFORMAT": "votable"},
                      headers=BROWSER).headers["content-type"].startswith("text/xml;content=x-votable")
    doc = html(client, f"/async/{job_id}/results/table", PAGE="2")
    rows = doc.xpath("//tbody/tr")
    assert len(rows) == 200 and rows[0].xpath("string(td[1])") == "25"  # rows 200-399: field 25 first
    one = html(client, f"/async/{job_id}/results/table", FIELD="7")
    assert len(one.xpath("//tbody/tr")) == IMAGES_PER_FIELD * 2
    expected = {f"00007.{r.id}.{e}" for r in chosen[7] for e in ("fits", "png")}
    assert {a.text for a in one.xpath("//tbody//a")} == expected
    assert html(client, f"/async/{job_id}/results/table", status=400, FIELD="10000").get_element_by_id(
        "form-error").text_content().startswith("UsageError: FIELD: ")
    bad = client.get(f"/async/{job_id}/results/table", params={"RESPONSEFORMAT": "csv"})
    assert bad.status_code == 400 and bad.text.startswith("UsageError: RESPONSEFORMAT: ")


def test_sky_pictures_are_svg_with_text_alternatives(big) -> None:
    client, job_id, _ = big
    landing = html(client, "/")
    img = landing.xpath("//figure[@class='sky']/img")[0]
    assert img.get("src") == "/sky.svg" and img.get("alt")
    caption = landing.xpath("string(//figure[@class='sky']/figcaption)")
    assert "55 images in 3 collections" in caption and "DEMO-POLE around RA 0.0°, Dec -30.0°" in caption
    for path in ("/sky.svg", f"/async/{job_id}/sky.svg"):
        response = client.get(path)
        assert response.headers["content-type"].startswith("image/svg+xml")
        svg = lxml.etree.fromstring(response.content)
        ns = {"s": "http://www.w3.org/2000/svg"}
        assert svg.get("role") == "img" and svg.xpath("string(s:desc)", namespaces=ns)
        assert not svg.xpath("//@style") and not svg.xpath("//s:script", namespaces=ns)
    assert len(client.get(f"/async/{job_id}/sky.svg").content) < 400_000
    assert "10000 fields" in html(client, f"/async/{job_id}").xpath("string(//figure/figcaption)")


def _inline_code(doc: lxml.html.HtmlElement) -> list[str]:
    """What a Content-Security-Policy of default-src 'self' would block: inline scripts, styles, handlers."""
    found = [f"<script> {s.text[:40]!r}" for s in doc.xpath("//script") if (s.text or "").strip() or not s.get("src")]
    found += ["<style>" for _ in doc.xpath("//style")] + [f"style= on <{e.tag}>" for e in doc.xpath("//*[@style]")]
    found += [f"{a} on <{e.tag}>" for e in doc.iter() if isinstance(e.tag, str) for a in e.attrib if a.startswith("on")]
    found += [f"external {u}" for u in doc.xpath("//script/@src | //link/@href | //img/@src") if "//" in u]
    return found


def test_every_page_is_ready_for_a_strict_content_security_policy(big) -> None:
    client, job_id, _ = big
    running = create_job(client, {"POS": "150.1,2.2", "SIZE": "0.01", "PHASE": "RUN",
                                  "START": (datetime.now(UTC) + timedelta(hours=1)).isoformat()})
    pages = ["/", "/async", f"/async/{job_id}", f"/async/{job_id}?VIEW=grid", f"/async/{running}",
             f"/async/{job_id}/results/table", "/schema"]
    for path in pages:
        doc = html(client, path)
        assert not _inline_code(doc), (path, _inline_code(doc))
    bad = lxml.html.fromstring(client.post("/async", data={"POS": "400,2"}, headers=BROWSER).text)
    assert not _inline_code(bad)
    for asset in ("/static/siasync.css", "/static/job.js", "/static/form.js"):
        assert client.get(asset).status_code == 200


def test_the_api_reference_is_a_page_of_its_own_with_no_cdn(client) -> None:
    doc = html(client, "/schema")
    text = doc.text_content()
    assert "POST /async" in text and "GET /async/{job_id}/results/table" in text
    assert "UsageError: PARAM: what is wrong" in text
    create = doc.xpath("//section[@id='post--async']")[0]
    names = create.xpath(".//table[caption[starts-with(., 'Body')]]//td[1]/code/text()")
    assert {"POS", "SIZE", "MODE", "NAXIS", "UPLOAD"} <= set(names)
    assert not doc.xpath("//script")
    assert client.get("/schema/openapi.json").json()["paths"]["/async"]
    assert client.get("/schema/openapi.yaml").status_code == 200
