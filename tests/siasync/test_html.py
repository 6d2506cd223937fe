"""The pages for people, driven through their own forms as a browser without JavaScript would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import lxml.html

from tests.siasync.helpers import create_job, phase, wait_for

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def page(client, path: str) -> lxml.html.HtmlElement:
    response = client.get(path, headers=BROWSER)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    return lxml.html.fromstring(response.text)


def submit(client, form: lxml.html.FormElement, **values: str):
    """Post a form's own fields (with some values changed) to its own action."""
    fields: dict[str, list[str]] = {}
    for name, value in form.form_values():
        fields.setdefault(name, []).append(values.pop(name, value))
    for name, value in values.items():
        fields.setdefault(name, []).append(value)
    return client.post(form.action, data=fields, headers=BROWSER, follow_redirects=False)


def test_landing_page_describes_the_archive_and_creates_jobs(client) -> None:
    doc = page(client, "/")
    text = doc.text_content()
    assert "DEMO-WIDE" in text and "DEMO-DEEP" in text and "55 images" in text
    for link in doc.xpath("//a/@href"):  # every link of the page leads somewhere
        assert client.get(link).status_code == 200, link
    form = doc.xpath("//form[@action='/async']")[0]
    assert form.method.upper() == "POST"
    form.fields["POS"] = "150.1,2.2\n150.2,2.25"
    response = submit(client, form, SIZE="0.02")
    assert response.status_code == 303
    job_id = response.headers["location"].rsplit("/", 1)[-1]
    assert wait_for(client, job_id, ("COMPLETED",)) == "COMPLETED"
    params = client.get(f"/async/{job_id}/parameters").text
    assert "150.1,2.2" in params and "0.02" in params


def test_job_page_shows_phase_parameters_results_and_working_forms(client) -> None:
    job_id = create_job(client, {"POS": "150.1,2.2", "SIZE": "0.02", "FORMAT": "ALL", "RUNID": "page test"})
    doc = page(client, f"/async/{job_id}")
    assert doc.get_element_by_id("phase").text == "PENDING"
    facts = dict(zip(doc.xpath("//dl[@class='facts']//dt/text()"), doc.xpath("//dl[@class='facts']//dd/text()")))
    assert facts["Fields"] == "1" and facts["FORMAT"] == "ALL" and facts["SIZE"] == "0.02°"
    assert doc.get_element_by_id("field-0").xpath("string(.//header)").split()[2:6] == ["RA", "150.10000°,", "Dec",
                                                                                        "+2.20000°,"]
    assert "page test" in doc.text_content()
    forms = {(f.action, tuple(sorted(dict(f.form_values())))): f for f in doc.forms}
    assert (f"/async/{job_id}/phase", ("PHASE",)) in forms

    new = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    destruction = next(f for f in doc.forms if f.action.endswith("/destruction"))
    assert submit(client, destruction, DESTRUCTION=new.isoformat()).status_code == 303
    assert datetime.fromisoformat(client.get(f"/async/{job_id}/destruction").text) == new

    run = next(f for f in doc.forms if dict(f.form_values()).get("PHASE") == "RUN")
    assert submit(client, run).status_code == 303
    wait_for(client, job_id, ("COMPLETED",))
    doc = page(client, f"/async/{job_id}")
    assert doc.get_element_by_id("phase").text == "COMPLETED"
    links = doc.xpath("//section[@data-field='0']//a[contains(@href, '/results/')]/@href")
    thumbs = doc.xpath("//section[@data-field='0']//img[contains(@class, 'thumb')]/@src")
    listed = [r for r in client.get(f"/async/{job_id}", headers={"Accept": "application/json"}).json()["results"]
              if r["id"] != "table"]
    assert sorted(link.rsplit("/", 1)[-1] for link in links) == sorted(r["id"] for r in listed)
    assert len(thumbs) == len(listed) // 2
    assert all(client.get(src).headers["content-type"] == "image/png" for src in thumbs)
    assert not [f for f in doc.forms if dict(f.form_values()).get("PHASE") in ("RUN", "ABORT")]

    delete = next(f for f in doc.forms if dict(f.form_values()).get("ACTION") == "DELETE")
    response = submit(client, delete)
    assert response.status_code == 303 and response.headers["location"] == "http://testserver.local/async"
    assert client.get(f"/async/{job_id}").status_code == 404


def test_abort_form_and_job_list_filters(client) -> None:
    job_id = create_job(client)
    doc = page(client, f"/async/{job_id}")
    abort = next(f for f in doc.forms if dict(f.form_values()).get("PHASE") == "ABORT")
    submit(client, abort)
    assert phase(client, job_id) == "ABORTED"
    other = create_job(client)
    listing = page(client, "/async")
    assert {job_id, other} <= set(listing.xpath("//td/a/text()"))
    filters = listing.xpath("//form[@method='get']")[0]
    assert {"PHASE", "LAST", "AFTER"} <= set(filters.inputs.keys())
    filtered = lxml.html.fromstring(client.get("/async", params={"PHASE": "ABORTED"}, headers=BROWSER).text)
    assert filtered.xpath("//td/a/text()") == [job_id]
    done = create_job(client, {"POS": "150.1,2.2\n10,10", "SIZE": "0.01", "PHASE": "RUN"})
    wait_for(client, done, ("COMPLETED",))
    info = client.get(f"/async/{done}", headers={"Accept": "application/json"}).json()["jobInfo"]
    row = page(client, "/async").xpath("//tr[td/a[text()=$j]]", j=done)[0]
    headers = page(client, "/async").xpath("//thead//th/text()")
    cells = dict(zip(headers, (td.text_content() for td in row.xpath("td")), strict=True))
    assert cells["Fields done"] == "2 / 2" and cells["Products"] == str(info["products"]) != "0"


def test_running_job_page_streams_updates_and_finished_page_does_not(client) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    queued = create_job(client, {"POS": "150.1,2.2", "SIZE": "0.01", "START": later, "PHASE": "RUN"})
    doc = page(client, f"/async/{queued}")
    assert doc.findtext(".//title") == f"Job {queued} · siasync"
    assert doc.xpath("//script/@src") == ["/static/job.js"] and not doc.xpath("//script/text()")
    assert doc.xpath("//noscript/meta[@http-equiv='refresh']/@content") == ["5"]  # without JavaScript: refreshed
    root = doc.get_element_by_id("job")
    assert (root.get("data-job"), root.get("data-after")) == (queued, "0")
    script = client.get("/static/job.js")
    assert script.status_code == 200 and "new EventSource(`/async/${job}/events?AFTER=" in script.text
    done = create_job(client, {"POS": "150.1,2.2", "SIZE": "0.01", "PHASE": "RUN"})
    wait_for(client, done, ("COMPLETED",))
    finished = page(client, f"/async/{done}")
    assert not finished.xpath("//script") and not finished.xpath("//noscript")


def test_the_job_page_shows_the_jobs_warnings(client) -> None:
    from tests.siasync.helpers import in_app, service

    job_id = create_job(client)
    warnings = [{"message": "parent demo-wide_r_e1_t11 could not be read: truncated file", "image": "x"},
                "an older warning, as plain text"]
    in_app(client, service(client).store.update, job_id, info={"fields_total": 1, "warnings": warnings})
    doc = page(client, f"/async/{job_id}")
    shown = [li.text_content() for li in doc.xpath("//section[@class='warnings']//li")]
    assert shown == ["parent demo-wide_r_e1_t11 could not be read: truncated file", "an older warning, as plain text"]
