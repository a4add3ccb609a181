"""The web console in a real browser (headless Chromium): every page loads with no console
error and keeps itself up to date, a running run's output appears without a reload (and with
JavaScript off the page reloads itself), and the runs page's filters work."""

from __future__ import annotations

import pytest

from tests.support.cli import reaped, spawn
from tests.support.console import browser, console_errors, served
from tests.support.project import Project
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def chrome():
    driver = browser()
    try:
        yield driver
    finally:
        driver.quit()


def _text(driver, css: str) -> str:
    """The text of the first element `css` finds; "" while the page is being replaced (a
    reload between finding the element and reading it)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        found = driver.find_elements("css selector", css)
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def _polls(driver) -> int:
    return int(driver.find_element("id", "live").get_attribute("data-polls") or 0)


def test_each_page_loads_without_console_errors_and_updates_itself(project: Project, chrome):
    project.task("good", "command: echo fine\n")
    project.task("bad", "command: echo broken; exit 1\n")
    project.run("--once", "-q", code=1)
    with served(project.root) as console:
        failed = console.json("/runs?status=failed")["runs"][0]["id"]
        for path, title in (
            ("", "Overview"),
            ("runs", "Runs"),
            (f"runs/{failed}", f"Run #{failed}"),
            ("tasks/ops/bad", "Task ops/bad"),
            ("machines/box", "Machine box"),
        ):
            chrome.get(console.url + path)
            assert chrome.find_element("css selector", "h1").text == title
            if path != f"runs/{failed}":  # a finished run's page has nothing left to follow
                wait_until(lambda: _polls(chrome) >= 1, timeout=15, message=f"{path} updating")
            assert console_errors(chrome) == [], path
        chrome.get(console.url + f"runs/{failed}")
        assert "broken" in _text(chrome, "#output")
        assert _text(chrome, "[data-field=status]") == "failed"


def test_live_output_of_a_running_run_appears_without_a_reload(project: Project, chrome):
    go = project.root / "go"
    project.task(
        "slow",
        f"""\
        command: |
          printf '\\033[32mfirst line\\033[0m\\r\\n'
          while [ ! -e "{go}" ]; do sleep 0.05; done
          printf '\\033[1;31msecond line\\033[0m\\n'
        """,
    )
    with served(project.root) as console, reaped(spawn("--once", "-q", cwd=project.root)) as run:
        running = wait_until(
            lambda: console.json("/runs?status=running")["runs"], timeout=30, message="a run"
        )
        chrome.get(console.url + f"runs/{running[0]['id']}")
        chrome.execute_script("window.notReloaded = true")
        wait_until(lambda: "first line" in _text(chrome, "#output"), message="the first line")
        assert _text(chrome, "[data-field=status]") == "running"
        go.write_text("")
        wait_until(lambda: "second line" in _text(chrome, "#output"), message="the second line")
        wait_until(lambda: _text(chrome, "[data-field=status]") == "succeeded", message="its end")
        assert chrome.execute_script("return window.notReloaded") is True
        assert _text(chrome, "[data-field=exit_code]") == "0"
        # Colour sequences are dropped as the output arrives, not shown as "[32m".
        assert _text(chrome, "#output") == "first line\nsecond line"
        assert console_errors(chrome) == []
        assert run.wait(timeout=30) == 0


def test_with_javascript_off_a_running_run_page_reloads_itself(project: Project):
    go = project.root / "go"
    project.task(
        "slow",
        f'command: echo first; while [ ! -e "{go}" ]; do sleep 0.05; done; echo second\n',
    )
    driver = browser(javascript=False)
    try:
        with (
            served(project.root) as console,
            reaped(spawn("--once", "-q", cwd=project.root)) as run,
        ):
            running = wait_until(
                lambda: console.json("/runs?status=running")["runs"], timeout=30, message="a run"
            )
            driver.get(console.url + f"runs/{running[0]['id']}")
            go.write_text("")
            wait_until(lambda: "second" in _text(driver, "#output"), timeout=20, message="a reload")
            assert run.wait(timeout=30) == 0
    finally:
        driver.quit()


def test_the_runs_filters_work(project: Project, chrome):
    for name, command in (("a", "true"), ("b", "exit 1"), ("c", "true")):
        project.task(name, f"command: '{command}'\n")
    project.run("--once", "-q", code=1)
    with served(project.root) as console:
        chrome.get(console.url + "runs")
        assert len(chrome.find_elements("css selector", "table.runs tbody tr")) == 3
        chrome.find_element("id", "filter-status-failed").click()
        chrome.find_element("id", "filter-apply").click()
        wait_until(lambda: "status=failed" in chrome.current_url, message="the filtered page")
        rows = chrome.find_elements("css selector", "table.runs tbody tr")
        assert [r.find_element("css selector", ".badge").text for r in rows] == ["failed"]
        chrome.get(console.url + "runs")
        chrome.find_element("css selector", "#filter-task option[value='ops/c']").click()
        chrome.find_element("id", "filter-apply").click()
        wait_until(lambda: "task=ops%2Fc" in chrome.current_url, message="the task filter")
        rows = chrome.find_elements("css selector", "table.runs tbody tr")
        assert len(rows) == 1 and "ops/c" in rows[0].text
        assert chrome.find_element("id", "filter-task").get_attribute("value") == "ops/c"
        assert console_errors(chrome) == []
