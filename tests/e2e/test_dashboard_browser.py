"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium, against a live run.

The page is opened with the printed URL (its token); the return curve gains points while the run
trains; the pause button pauses the run (as `dynamicrl status` sees it); an invalid patch shows the
controller's message beside its field and changes nothing; a valid one shows in the journal and
as a marker on the hyperparameter curve once the resumed run applies it; a training clip appears.
A screenshot is saved in the test's directory.
"""

from __future__ import annotations

import os
import shutil

import pytest
from helpers import wait_until
from helpers_dashboard import Dashboard
from test_videos import FILMING

pytestmark = pytest.mark.e2e

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
RUN = [
    "env.num_envs=2",
    "algo.num_steps=64",
    "run.total_env_steps=100000000",
    "logger.console=false",
    "video.every_iterations=20",
    "video.max_steps=60",
    *FILMING,
]


@pytest.fixture
def browser():
    if CHROMIUM is None or DRIVER is None:  # .ci/run installs both; a developer machine may lack them
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1300"):
        options.add_argument(flag)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or a driver
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def text_of(driver, selector: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


def attribute(driver, selector: str, name: str) -> int:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, selector)
    value = found[0].get_attribute(name) if found else None
    return int(value) if value and value.isdigit() else 0


def test_watch_pause_patch_and_see_a_clip_in_the_browser(runs, browser):
    from selenium.webdriver.common.by import By

    run = runs("browser", RUN).start()
    with Dashboard(run) as board:
        run.wait_iteration(2, timeout=120)
        browser.get(board.url)
        assert "token" not in browser.current_url  # the login set the cookie and left the address bar clean
        wait_until(lambda: text_of(browser, "#run-state") == "running", timeout=60, message="never running")
        wait_until(lambda: text_of(browser, "#connection") == "live", timeout=30, message="no event stream")
        points = wait_until(lambda: attribute(browser, "#chart-metrics", "data-points"), timeout=60)
        wait_until(
            lambda: attribute(browser, "#chart-metrics", "data-points") > points + 3,
            timeout=60,
            message="the return curve gained no points",
        )

        browser.find_element(By.ID, "btn-pause").click()
        wait_until(lambda: run.cli("status", "--json").json["state"] == "paused", timeout=30, interval=0.5)
        wait_until(lambda: text_of(browser, "#run-state") == "paused", timeout=30)

        lr = browser.find_element(By.CSS_SELECTOR, 'input[data-param="ppo.lr"]')
        lr.clear()
        lr.send_keys("-1")
        browser.find_element(By.ID, "patch-submit").click()
        error = '[data-error-for="ppo.lr"]'
        wait_until(
            lambda: "greater than 0" in text_of(browser, error),
            timeout=30,
            message=f"no message beside ppo.lr: {text_of(browser, error)!r}",
        )
        assert run.params()["ppo.lr"] == 0.0025 and not run.journal()

        lr = browser.find_element(By.CSS_SELECTOR, 'input[data-param="ppo.lr"]')
        lr.clear()
        lr.send_keys("0.001")
        browser.find_element(By.ID, "patch-submit").click()
        wait_until(lambda: text_of(browser, error) == "", timeout=30, message="the old message stayed")
        browser.find_element(By.ID, "btn-resume").click()  # a patch sent while paused applies on resume
        wait_until(lambda: "ppo.lr" in text_of(browser, "#journal"), timeout=60, message="not in the journal")
        assert "0.001" in text_of(browser, "#journal")
        wait_until(
            lambda: attribute(browser, "#chart-params", "data-markers") >= 1, timeout=30, message="no patch marker"
        )
        assert run.params()["ppo.lr"] == 0.001
        assert run.cli("status", "--json").json["state"] == "running"
        assert attribute(browser, "#chart-metrics", "data-pauses") >= 1  # the pause, shaded

        def clip_shown() -> str:
            found = browser.find_elements(By.ID, "clip")
            source = found[0].get_attribute("src") if found else ""
            return source if source and source.endswith(".mp4") else ""

        source = wait_until(clip_shown, timeout=180, interval=1.0, message="no training clip on the page")
        assert "/files/videos/iter-" in source
        loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert any(url.endswith("/static/plotly.min.js") for url in loaded), loaded
        assert all(url.startswith(board.base) for url in loaded), loaded  # offline: nothing from elsewhere
        browser.save_screenshot(str(run.tmp / "dashboard.png"))
        assert (run.tmp / "dashboard.png").stat().st_size > 10_000


def test_the_page_says_run_not_reachable_until_its_run_answers(runs, browser):
    run = runs("late", RUN[:4])
    with Dashboard(run) as board:
        browser.get(board.url)
        wait_until(
            lambda: text_of(browser, "#run-state") == "run not reachable",
            timeout=30,
            message=f"state shown: {text_of(browser, '#run-state')!r}",
        )
        run.start()
        wait_until(
            lambda: text_of(browser, "#run-state") == "running",
            timeout=120,
            interval=0.5,
            message=f"state shown: {text_of(browser, '#run-state')!r}",
        )
        wait_until(
            lambda: attribute(browser, "#chart-metrics", "data-points") > 0,
            timeout=60,
            message="the curves did not recover",
        )
