"""The approval clicked in the real Prefect UI: headless Chromium (Debian's package, driven by Selenium through
Debian's chromedriver) opens the paused run, fills the typed form and submits it; the run then completes, or,
rejected, ends Cancelled, and the UI shows it. CI installs the browser (`.ci/services.sh start browser`); on a
machine without it the tests are skipped, never in CI."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# A busy two-core machine renders the UI slowly: generous waits, and room beyond the default test timeout.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]
WAIT_S = 120

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium session; skipped (outside CI only) when Debian's chromium/chromium-driver are absent."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} missing in CI: `.ci/services.sh start browser` installs them")
        pytest.skip(f"{', '.join(missing)} not installed: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    # Selenium must use the given browser and driver and never fetch its own.
    os.environ["SE_OFFLINE"] = "true"
    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _click(driver: Any, xpath: str, timeout_s: float = WAIT_S) -> Any:
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    element = WebDriverWait(driver, timeout_s).until(expected_conditions.element_to_be_clickable(("xpath", xpath)))
    element.click()
    return element


def _decide_in_the_ui(
    driver: Any, ui_url: str, run_id: str, *, decision: str, reviewer: str, comment: str
) -> tuple[str, list[str]]:
    """Open the paused run, open its Resume dialog, fill the form and submit it; returns the dialog's text and
    the labels of its fields."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    # The Details tab: the Logs tab (the default) renders the whole pre-flight log first.
    driver.get(f"{ui_url}/v2/runs/flow-run/{run_id}?tab=Details")
    _click(driver, "//button[normalize-space()='Open menu']")
    _click(driver, "//*[@role='menuitem'][normalize-space()='Resume']")
    dialog = WebDriverWait(driver, WAIT_S).until(
        expected_conditions.visibility_of_element_located(("xpath", "//*[@role='dialog']"))
    )
    WebDriverWait(driver, WAIT_S).until(lambda _: "Reviewer" in dialog.text)
    shown = str(dialog.text)
    labels = [str(label.text) for label in dialog.find_elements("xpath", ".//label")]
    _click(dialog, ".//button[@aria-label='Select Decision']")
    _click(driver, f"//*[@role='option'][normalize-space()='{decision}']")
    dialog.find_element("xpath", ".//label[normalize-space()='Reviewer']/following::textarea[1]").send_keys(reviewer)
    comment_label = ".//label[starts-with(normalize-space(), 'Comment')]/following::textarea[1]"
    dialog.find_element("xpath", comment_label).send_keys(comment)
    dialog.find_element("xpath", ".//button[normalize-space()='Resume']").click()
    WebDriverWait(driver, WAIT_S).until(expected_conditions.invisibility_of_element(dialog))
    return shown, labels


def _ui_shows_state(driver: Any, ui_url: str, run_id: str, state: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{ui_url}/v2/runs/flow-run/{run_id}")
    WebDriverWait(driver, WAIT_S).until(lambda page: state in page.find_element("tag name", "body").text)


def _paused(run_name: str, wait_for: Callable[..., Any], api_url: str) -> Any:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from aoi_pipeline.control import list_runs

    def check() -> Any:
        with temporary_settings({PREFECT_API_URL: api_url}):
            return [run for run in list_runs(limit=1, run=run_name) if run.paused]

    (info,) = wait_for(f"pause of {run_name}", check, timeout_s=180)
    return info


def test_a_reviewer_approves_in_the_prefect_ui_and_the_run_completes(
    browser, prefect_server_url, pipeline_in_thread, wait_for
) -> None:
    ui_url = prefect_server_url.removesuffix("/api")
    running = pipeline_in_thread("run_ui_approve")
    info = _paused("run_ui_approve", wait_for, prefect_server_url)
    plan_hash = re.match(r"Waiting for approval of plan (\w+): ", info.message).group(1)  # type: ignore[union-attr]

    shown, labels = _decide_in_the_ui(
        browser, ui_url, str(info.id), decision="approve", reviewer="ui-reviewer", comment="clicked in Chromium"
    )

    assert f"READY FOR APPROVAL: plan {plan_hash}" in shown, "the form does not show the plan it approves"
    assert labels == ["Decision", "Reviewer", "Comment (Optional)"], "the form offers more than the decision"
    state = running.join_state()
    assert state.is_completed(), state
    assert state.result()["plan_hash"] == plan_hash
    _ui_shows_state(browser, ui_url, str(info.id), "Completed")


def test_a_reviewer_rejects_in_the_prefect_ui_and_the_run_ends_cancelled(
    browser, prefect_server_url, pipeline_in_thread, wait_for, tmp_path
) -> None:
    ui_url = prefect_server_url.removesuffix("/api")
    running = pipeline_in_thread("run_ui_reject")
    info = _paused("run_ui_reject", wait_for, prefect_server_url)

    _decide_in_the_ui(browser, ui_url, str(info.id), decision="reject", reviewer="ui-reviewer", comment="not today")

    state = running.join_state()
    assert state.is_cancelled(), state
    assert state.message == "Rejected by ui-reviewer: not today"
    assert not (tmp_path / "workspace" / "results").exists(), "a rejected run wrote results"
    _ui_shows_state(browser, ui_url, str(info.id), "Cancelled")
