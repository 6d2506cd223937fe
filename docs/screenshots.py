"""Screenshots of the main pages for docs/ and the README, taken in Debian's headless Chromium from a real server.

Run with ``make screenshots``: it starts `siasync serve` on the demo archive in a scratch state
directory, makes a 300-field FORMAT=ALL job, and saves PNGs of the landing page, the job page
(list and thumbnail grid), a refused form, the table's page and the API reference.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.common.by import By

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._server import BenchServer  # noqa: E402

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1280,1000")


def shoot(driver: webdriver.Chrome, url: str, path: Path, height: int = 1000) -> None:
    driver.set_window_size(1280, height)
    driver.get(url)
    time.sleep(1.0)  # thumbnails and the sky picture load
    driver.save_screenshot(str(path))
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=REPO / "data" / "demo")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="siasync-shots-"))
    profile = tempfile.mkdtemp(prefix="siasync-chromium-")
    server = BenchServer(args.archive, state, "--workers", "2")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        positions = "\n".join(f"{149.7 + 0.04 * (i % 20):.3f},{1.8 + 0.055 * (i // 20):.3f}" for i in range(300))
        created = httpx.post(server.url + "/async", data={"POS": positions, "SIZE": "0.02", "FORMAT": "ALL",
                                                          "RUNID": "screenshots", "PHASE": "RUN"})
        job = server.url + created.headers["location"] if created.status_code == 303 else None
        assert job, created.text
        for _ in range(10):
            if httpx.get(job + "/phase").text == "COMPLETED":
                break
            httpx.get(job, params={"WAIT": "30"}, timeout=40)
        shoot(driver, server.url + "/", args.out / "page-landing.png", 1150)
        shoot(driver, job, args.out / "page-job.png", 1150)
        shoot(driver, job + "?VIEW=grid&BAND=r", args.out / "page-job-grid.png", 1000)
        shoot(driver, job + "/results/table", args.out / "page-table.png", 700)
        driver.set_window_size(1280, 900)
        driver.get(server.url + "/")
        driver.find_element(By.ID, "pos").send_keys("150.1,2.2\n400,2")
        driver.find_element(By.CSS_SELECTOR, "form[action='/async'] button[type=submit]").click()
        time.sleep(1.0)
        driver.execute_script("document.getElementById('pos').scrollIntoView({block: 'center'})")
        driver.save_screenshot(str(args.out / "page-form-error.png"))
        print(f"wrote {args.out / 'page-form-error.png'}")
        shoot(driver, server.url + "/schema", args.out / "page-api.png", 800)
    finally:
        driver.quit()
        server.stop()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(profile, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
