"""Forms that explain: a refused form comes back to a browser (400) with every value and the API's own error text
next to its field; a zip of everything streams with its manifest; the event stream says where each result goes."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import httpx
import lxml.html
import pytest

from siasync.web.bundle import CHUNK, zip_stream
from tests.siasync.helpers import create_job, in_app, service, wait_for

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
GOOD = {"POS": "150.1,2.2", "SIZE": "0.05", "FORMAT": "ALL", "INTERSECT": "OVERLAPS", "MODE": "cutout"}


@pytest.mark.parametrize(("changes", "param"), [
    ({"POS": ""}, "POS"),
    ({"POS": "400,2"}, "POS"),
    ({"POS": "150.1,2.2\n150.2"}, "POS"),
    ({"SIZE": "abc"}, "SIZE"),
    ({"SIZE": "5"}, "SIZE"),
    ({"NAXIS": "100"}, "NAXIS"),
    ({"MODE": "mosaic", "CDELT": "-1e-9"}, "CDELT"),
    ({"MODE": "stack", "SIZE": "1", "PROJ": "TAN"}, "SIZE"),
    ({"START": "next week"}, "START"),
    ({"RUNID": "x" * 300}, "RUNID"),
])
def test_a_refused_form_comes_back_with_its_values_and_the_apis_error_next_to_the_field(client, changes,
                                                                                          param) -> None:
    data = {**GOOD, "COLLECTION": ["DEMO-WIDE", "DEMO-DEEP"], "BAND": "r", "RUNID": "night 1", "ROTANG": "",
            "PHASE": "RUN", **changes}
    api = client.post("/async", data={k: v for k, v in data.items() if v != ""}, follow_redirects=False)
    assert api.status_code == 400 and api.headers["content-type"].startswith("text/plain")
    page = client.post("/async", data=data, headers=BROWSER, follow_redirects=False)
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    doc = lxml.html.fromstring(page.text)
    form = doc.xpath("//form[@action='/async']")[0]
    field = form.xpath(f".//*[@name='{param}']")[0]
    assert field.get("aria-invalid") == "true"
    assert doc.get_element_by_id(field.get("aria-describedby")).text_content() == api.text.strip()
    assert api.text.strip() in doc.get_element_by_id("form-error").text_content()
    values = dict(form.form_values())
    for name, value in data.items():  # every value is kept (selects by their chosen options)
        if name in ("COLLECTION", "PHASE"):
            continue
        assert values.get(name, "") == (value if name != "POS" else value.replace("\r", "")), name
    assert form.xpath(".//select[@name='COLLECTION']/option[@selected]/text()") == ["DEMO-DEEP", "DEMO-WIDE"]
    assert form.xpath(".//input[@name='PHASE']/@checked")
    assert not client.get("/async", headers={"Accept": "application/json"}).json()  # and no job was made


def test_blank_fields_of_a_browsers_form_are_not_given(client) -> None:
    data = {**GOOD, "NAXIS": "", "CDELT": " ", "PROJ": "", "COMBINE": "", "RUNID": "", "START": ""}
    response = client.post("/async", data=data, headers=BROWSER, follow_redirects=False)
    assert response.status_code == 303
    api = client.post("/async", data=data, follow_redirects=False)  # for the API an empty value stays an error
    assert api.status_code == 400 and api.text.startswith("UsageError: NAXIS: ")


def test_refused_changes_of_a_job_come_back_on_its_page(client) -> None:
    job_id = create_job(client)
    response = client.post(f"/async/{job_id}/destruction", data={"DESTRUCTION": "yesterday"}, headers=BROWSER)
    assert response.status_code == 400
    doc = lxml.html.fromstring(response.text)
    api = client.post(f"/async/{job_id}/destruction", data={"DESTRUCTION": "yesterday"})
    assert doc.get_element_by_id("destruction").get("value") == "yesterday"
    assert doc.get_element_by_id("destruction-error").text_content() == api.text.strip()
    client.post(f"/async/{job_id}/phase", data={"PHASE": "ABORT"})
    again = client.post(f"/async/{job_id}/phase", data={"PHASE": "ABORT"}, headers=BROWSER)
    assert again.status_code == 403
    assert lxml.html.fromstring(again.text).get_element_by_id("form-error").text_content().startswith(
        "PermissionDenied: cannot abort job")
    listing = client.get("/async", params={"LAST": "many"}, headers=BROWSER)
    assert listing.status_code == 400
    doc = lxml.html.fromstring(listing.text)
    assert doc.get_element_by_id("last").get("value") == "many"
    assert doc.get_element_by_id("last-error").text_content().startswith("UsageError: LAST: ")
    missing = client.get("/async/nosuchjob", headers=BROWSER)
    assert missing.status_code == 404
    assert lxml.html.fromstring(missing.text).get_element_by_id("form-error").text == "NotFound: no job 'nosuchjob'"
    assert client.get("/async/nosuchjob").text == "NotFound: no job 'nosuchjob'\n"


def test_download_all_streams_a_zip_with_a_manifest_the_files_and_the_table(client) -> None:
    job_id = create_job(client, {**GOOD, "POS": "150.1,2.2\n150.3,2.4\n10,10", "PHASE": "RUN"})
    wait_for(client, job_id, ("COMPLETED",))
    doc = lxml.html.fromstring(client.get(f"/async/{job_id}", headers=BROWSER).text)
    link = doc.get_element_by_id("download").get("href")
    command = doc.get_element_by_id("fetch-command").text
    assert command == f"siasync fetch --job http://testserver.local/async/{job_id} --out {job_id}"
    response = client.get(link)
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == f'attachment; filename="siasync-{job_id}.zip"'
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None
    listed = [r for r in client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()["results"]
              if r["id"] != "table"]
    folder = f"siasync-{job_id}/"
    names = archive.namelist()
    assert names[0] == folder + "manifest.csv" and names[-2:] == [folder + "table.xml", folder + "README.txt"]
    assert sorted(names[1:-2]) == sorted(folder + r["id"] for r in listed)
    for r in listed:
        assert archive.read(folder + r["id"]) == client.get(f"/async/{job_id}/results/{r['id']}").content
    manifest = archive.read(folder + "manifest.csv").decode().splitlines()
    assert manifest[0] == "file,field,ra,dec,image_id,collection,band,mime_type,size"
    assert sorted(line.split(",")[0] for line in manifest[1:]) == sorted(r["id"] for r in listed)
    table = archive.read(folder + "table.xml").decode()
    assert table.count("<TR>") == len(listed) and table.rstrip().endswith("</VOTABLE>")
    readme = archive.read(folder + "README.txt").decode()
    assert "when the job was COMPLETED" in readme and "still running" not in readme

    # streamed: the zip is produced a chunk at a time, never whole, and nothing is written to disk for it
    state = client.app.state.service.files.root

    async def pieces() -> list[int]:
        job = await service(client).get(job_id, "anonymous")
        return [len(p) async for p in zip_stream(service(client), client.app.state.job_page.browser, job,
                                                 "http://testserver.local")]

    files_before = sorted(state.rglob("*"))
    sizes = in_app(client, pieces)
    assert sorted(state.rglob("*")) == files_before
    assert sum(sizes) == len(response.content) and len(sizes) > 10
    assert max(sizes) <= CHUNK + 64 * 1024  # a chunk of a file, and the zip's headers around it


def test_a_running_jobs_zip_holds_what_it_has_so_far_and_says_so(client) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job_id = create_job(client, {**GOOD, "START": later, "PHASE": "RUN"})
    response = client.get(f"/async/{job_id}/results.zip")
    assert response.headers["content-disposition"] == f'attachment; filename="siasync-{job_id}-partial.zip"'
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    readme = archive.read(f"siasync-{job_id}/README.txt").decode()
    assert "NOTE: the job was still running" in readme
    assert f"siasync fetch --job http://testserver.local/async/{job_id} --out {job_id}" in readme
    assert archive.read(f"siasync-{job_id}/manifest.csv").decode().count("\n") == 1  # the header alone


def test_result_events_name_their_image_band_and_collection_and_times_are_sent(client) -> None:
    job_id = create_job(client, {**GOOD, "PHASE": "RUN"})
    wait_for(client, job_id, ("COMPLETED",))
    events, kind = [], None
    for line in client.get(f"/async/{job_id}/events").text.splitlines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[6:])))
    index = client.app.state.index
    results = [data for kind, data in events if kind == "result"]
    assert results and all(r["image"] == r["id"].split(".")[1] for r in results)
    assert all((r["collection"], r["band"]) == (index.by_id[r["image"]].collection, index.by_id[r["image"]].band)
               for r in results)
    times = [data for kind, data in events if kind == "times"][-1]
    job = client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()
    assert (times["startTime"], times["endTime"], times["quote"]) == (job["startTime"], job["endTime"], job["quote"])
    assert isinstance(httpx.URL(results[0]["href"]), httpx.URL)
