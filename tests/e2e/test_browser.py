"""The pages in a real browser: Debian's Chromium, driven through Selenium and its chromedriver, on a real server.

One browser and one server serve the whole module. JavaScript is switched off and on per test through the
DevTools protocol, so that each page is seen as both kinds of visitor see it. axe-core (shipped inside the
selenium-axe-python package, read from disk) checks every page for accessibility violations.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, serving, submit

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.expected_conditions import staleness_of  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402
from selenium_axe_python import Axe  # noqa: E402

#: Chromium's flags for this machine's closed network: no first-run, sync, component or background connection
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,900")


def chromium() -> tuple[str, str]:
    """Debian's Chromium and its driver (`make test` installs them when missing)."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: run `make test` (as root) or "
                    "apt-get install chromium chromium-driver")
    return browser, driver


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, demo_archive: Path) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("browser"), demo_archive, "--workers", "2") as server:
        yield server


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[webdriver.Chrome]:
    binary, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tempfile.mkdtemp(prefix="siasync-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def javascript(driver: webdriver.Chrome, on: bool) -> None:
    """Switch the page's JavaScript on or off (it applies from the next page load)."""
    driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": not on})


def no_violations(driver: webdriver.Chrome) -> None:
    """axe-core finds nothing on the page shown."""
    javascript(driver, True)  # axe itself is a script; the page's own state is already rendered
    axe = Axe(driver)
    axe.inject()
    violations = axe.run()["violations"]
    assert not violations, f"{driver.current_url}\n{axe.report(violations)}"


def wait(driver: webdriver.Chrome, condition, timeout: float = 30):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))


def follow(driver: webdriver.Chrome, element) -> None:
    """Click a link or a form's button, and wait for the next page."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    wait(driver, lambda d: _left(old))


def _left(old) -> bool:
    """Whether the page holding ``old`` is gone: its node stale, or (Chromium, caught mid-navigation) no longer
    in the document."""
    try:
        return staleness_of(old)(None)
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise


def text(driver: webdriver.Chrome, element_id: str) -> str:
    try:
        return driver.find_element(By.ID, element_id).text
    except StaleElementReferenceException:  # the page is being replaced
        return ""


def later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def test_without_javascript_the_form_creates_a_job_whose_page_refreshes_itself(site, browser) -> None:
    javascript(browser, False)
    browser.get(site.url + "/")
    assert browser.find_element(By.ID, "grid").is_displayed()  # without JavaScript the grid fields are all shown
    browser.find_element(By.ID, "pos").send_keys("150.1,2.2")
    browser.find_element(By.ID, "start").send_keys(later(6))
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form[action='/async'] button[type=submit]"))
    assert "/async/" in browser.current_url
    assert text(browser, "phase") == "QUEUED"
    first = browser.find_element(By.ID, "phase")
    wait(browser, lambda d: text(d, "phase") == "COMPLETED", 40)  # reached by the page refreshing itself
    with pytest.raises(StaleElementReferenceException):
        first.text  # noqa: B018 - the element of the first load is gone: the page was loaded again
    assert browser.find_elements(By.CSS_SELECTOR, "#field-0 ul.images li")
    no_violations(browser)


def test_with_javascript_results_appear_live_in_their_field_groups(site, browser) -> None:
    javascript(browser, True)
    browser.get(site.url + "/")
    no_violations(browser)
    grid = browser.find_element(By.ID, "grid")
    assert not grid.is_displayed()
    Select(browser.find_element(By.ID, "mode")).select_by_visible_text("mosaic")
    assert grid.is_displayed()
    Select(browser.find_element(By.ID, "mode")).select_by_visible_text("cutout")
    positions = [f"{150.0 + 0.01 * (i % 15):.2f},{2.1 + 0.01 * (i // 15):.2f}" for i in range(30)]
    browser.find_element(By.ID, "pos").send_keys("\n".join(positions))
    Select(browser.find_element(By.ID, "format")).select_by_visible_text("ALL")
    browser.find_element(By.ID, "start").send_keys(later(3))
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form[action='/async'] button[type=submit]"))
    assert "/async/" in browser.current_url
    browser.execute_script("window.notReloaded = true")
    assert text(browser, "started") == "not yet" and text(browser, "fields-done") == "0"
    no_violations(browser)
    # products arrive in field 0's group, with thumbnails, and the progress and start time move, with no reload
    wait(browser, lambda d: d.execute_script(
        "return window.notReloaded === true && document.querySelectorAll('#field-0 img.thumb').length > 0"
        " && document.getElementById('started').textContent !== 'not yet'"))
    links = browser.find_elements(By.CSS_SELECTOR, "#field-0 a[href*='/results/']")
    assert all(httpx.get(a.get_attribute("href")).status_code == 200 for a in links)
    wait(browser, lambda d: text(d, "phase") == "COMPLETED", 60)
    wait(browser, lambda d: d.execute_script("return window.notReloaded === undefined"))  # the final page
    # the first results are on the first screen (1280 x 900), above the fold
    assert browser.execute_script("return document.querySelector('#field-0 img.thumb').getBoundingClientRect()"
                                  ".bottom <= window.innerHeight")
    job = httpx.get(browser.current_url, headers={"Accept": "application/json"}).json()
    shown = {a.get_attribute("href").rsplit("/", 1)[-1]
             for a in browser.find_elements(By.CSS_SELECTOR, "section.field a[href*='/results/']")}
    assert shown == {r["id"] for r in job["results"] if r["id"] != "table" and int(r["id"][:5]) < 25}
    no_violations(browser)


def test_paging_through_a_2000_field_job_and_filtering_it(site, browser) -> None:
    # every tenth field is on DEMO-WIDE, the others off the archive: 2,000 fields staged in seconds
    positions = [f"{150.1 + 0.001 * (i // 10)},{2.2}" if i % 10 == 0 else "200,-10" for i in range(2000)]
    job = submit(site, POS="\n".join(positions), SIZE="0.002", FORMAT="ALL", COLLECTION="DEMO-WIDE", PHASE="RUN")
    httpx.get(job, params={"WAIT": "60", "PHASE": "EXECUTING"}, timeout=70)
    httpx.get(job, params={"WAIT": "60"}, timeout=70)
    javascript(browser, False)
    browser.get(job)
    assert browser.find_element(By.CSS_SELECTOR, "nav.pager span").text == "Page 1 of 80"
    follow(browser, browser.find_element(By.CSS_SELECTOR, "nav.pager a[rel=next]"))
    fields = [s.get_attribute("data-field") for s in browser.find_elements(By.CSS_SELECTOR, "section.field")]
    assert fields == [str(i) for i in range(25, 50)]
    assert "no archive image overlaps" in browser.find_element(By.ID, "field-26").text
    assert browser.find_elements(By.CSS_SELECTOR, "#field-30 img.thumb")
    follow(browser, browser.find_element(By.LINK_TEXT, "Last"))
    fields = [s.get_attribute("data-field") for s in browser.find_elements(By.CSS_SELECTOR, "section.field")]
    assert fields == [str(i) for i in range(1975, 2000)]
    Select(browser.find_element(By.ID, "band")).select_by_index(1)  # the first band with products
    Select(browser.find_element(By.ID, "view")).select_by_visible_text("thumbnail grid")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form.toolbar button"))
    fields = [int(s.get_attribute("data-field")) for s in browser.find_elements(By.CSS_SELECTOR, "section.field")]
    assert fields == list(range(0, 250, 10))  # only the fields with products of that band, 25 a page
    assert browser.find_elements(By.CSS_SELECTOR, "#field-0 ul.grid img.thumb")
    no_violations(browser)
    browser.get(job + "/results/table")
    assert browser.find_elements(By.CSS_SELECTOR, "table tbody tr")
    no_violations(browser)


def test_a_bad_submission_keeps_its_values_and_shows_the_error_by_its_field(site, browser) -> None:
    javascript(browser, True)
    browser.get(site.url + "/")
    browser.find_element(By.ID, "pos").send_keys("400,2")
    size = browser.find_element(By.ID, "size")
    size.clear()
    size.send_keys("0.02")
    Select(browser.find_element(By.ID, "collection")).select_by_visible_text("DEMO-DEEP")
    browser.find_element(By.ID, "runid").send_keys("night 7")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form[action='/async'] button[type=submit]"))
    expected = "UsageError: POS: RA must be in [0, 360), got 400 in '400,2'"
    assert browser.find_element(By.ID, "pos-error").text == expected
    assert browser.find_element(By.ID, "pos").get_attribute("value") == "400,2"
    assert browser.find_element(By.ID, "size").get_attribute("value") == "0.02"
    assert browser.find_element(By.ID, "runid").get_attribute("value") == "night 7"
    assert [o.text for o in Select(browser.find_element(By.ID, "collection")).all_selected_options] == ["DEMO-DEEP"]
    no_violations(browser)
    browser.get(site.url + "/async/nosuchjob")
    assert "NotFound: no job 'nosuchjob'" in browser.find_element(By.ID, "form-error").text
    no_violations(browser)


def test_abort_delete_and_download_all(site, browser, downloads: Path) -> None:
    javascript(browser, True)
    done = submit(site, POS="150.1,2.2\n150.2,2.3", SIZE="0.02", FORMAT="ALL", PHASE="RUN")
    httpx.get(done, params={"WAIT": "30"}, timeout=40)
    httpx.get(done, params={"WAIT": "30"}, timeout=40)
    browser.get(done)
    browser.find_element(By.ID, "download").click()
    job_id = done.rsplit("/", 1)[-1]
    target = downloads / f"siasync-{job_id}.zip"
    wait(browser, lambda d: target.exists())
    archive = zipfile.ZipFile(io.BytesIO(target.read_bytes()))
    listed = [r["id"] for r in httpx.get(done, headers={"Accept": "application/json"}).json()["results"]
              if r["id"] != "table"]
    assert sorted(n.split("/", 1)[1] for n in archive.namelist()) == sorted(
        [*listed, "manifest.csv", "table.xml", "README.txt"])
    assert browser.find_element(By.ID, "fetch-command").text == f"siasync fetch --job {done} --out {job_id}"
    no_violations(browser)

    waiting = submit(site, POS="150.1,2.2", SIZE="0.02", PHASE="RUN", START=later(3600))
    browser.get(waiting)
    follow(browser, browser.find_element(By.XPATH, "//button[text()='Abort']"))
    assert text(browser, "phase") == "ABORTED"
    assert not browser.find_elements(By.XPATH, "//button[text()='Abort']")
    follow(browser, browser.find_element(By.XPATH, "//button[text()='Delete']"))
    assert browser.current_url.endswith("/async")
    assert waiting.rsplit("/", 1)[-1] not in browser.find_element(By.TAG_NAME, "table").text
    assert httpx.get(waiting).status_code == 404
    no_violations(browser)


def test_the_api_reference_works_offline(site, browser) -> None:
    javascript(browser, False)
    browser.get(site.url + "/schema")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("API reference: siasync")
    assert browser.find_element(By.ID, "post--async")
    no_violations(browser)


def test_the_server_logs_a_line_per_job_event_and_per_error_and_no_access_lines(site, browser) -> None:
    job = submit(site, POS="150.1,2.2", SIZE="0.02", MODE="mosaic", BAND="r", COLLECTION="DEMO-WIDE", PHASE="RUN")
    httpx.get(job, params={"WAIT": "30"}, timeout=40)
    httpx.get(job, params={"WAIT": "30"}, timeout=40)
    httpx.post(site.url + "/async", data={"POS": "400,2"})
    job_id = job.rsplit("/", 1)[-1]
    deadline = time.monotonic() + 10
    while f"job {job_id} COMPLETED" not in site.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = site.log_path.read_text().splitlines()
    mine = [line for line in lines if f"job {job_id}" in line]
    assert [line.split(f"job {job_id} ", 1)[1].split()[0].rstrip(":") for line in mine] == [
        "created", "EXECUTING", "COMPLETED"]
    assert mine[-1].endswith("1/1 fields, 1 products, " + mine[-1].split("products, ")[1])
    assert any("POST /async: 400 UsageError: POS: RA must be in [0, 360)" in line for line in lines)
    assert not [line for line in lines if "HTTP/1.1" in line]  # no access log by default
    assert not [line for line in lines if "reproject" in line or "INFO Computing" in line]
