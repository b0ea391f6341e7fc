"""The dashboard in a real browser (Debian chromium driven by playwright, no download).

Against a server with the small fleet of :mod:`fleetkit`: the counts the page shows equal
the admin API's, searching finds a device, revoking it through the page (confirming the
dialog) changes its state on the page and in the API, and a screenshot goes to
``docs/dashboard.png`` (the README shows it), or into ``CERTHUB_SCREENSHOT_DIR`` when that
is set. Skipped only when chromium is absent (playwright, the python package, drives the
system chromium through ``executable_path``: no browser download).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleetkit import Fleet, admin_counts, fleet_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
STATES = ("healthy", "renewal-due", "overdue", "expired", "revoked", "disabled", "no-certificate")

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="chromium is not installed (Debian: apt-get install chromium)",
    ),
]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_server(tmp_path) as running:
        yield running


@pytest.fixture
def page(fleet: Fleet) -> Iterator[Any]:
    # Not skipped when missing: with chromium present, playwright must be installed too.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        context = browser.new_context(
            ignore_https_errors=True, viewport={"width": 1280, "height": 1100}
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def screenshot_path() -> Path:
    """``docs/dashboard.png``, or ``dashboard.png`` in ``$CERTHUB_SCREENSHOT_DIR``."""
    directory = os.environ.get("CERTHUB_SCREENSHOT_DIR")
    return Path(directory) / "dashboard.png" if directory else DOCS_SCREENSHOT


def shown_counts(page: Any) -> dict[str, int]:
    return {s: int(page.locator(f"#count-{s}").inner_text()) for s in STATES}


def test_dashboard_counts_search_and_revoke(fleet: Fleet, page: Any) -> None:
    page.goto(f"{fleet.base_url}/dashboard/")
    page.wait_for_selector("body[data-loaded=true]")
    assert page.locator("#login").is_hidden()  # development profile on loopback: open
    api = admin_counts(fleet)
    assert shown_counts(page) == {s: api.get(s, 0) for s in STATES}
    assert page.locator("#timeline rect").count() > 0

    page.fill("#search", "dev-03")
    row = page.locator("#devices tbody tr[data-device='dev-03-healthy']")
    page.wait_for_function("document.querySelectorAll('#devices tbody tr').length === 1")
    assert row.count() == 1
    row.click()
    page.wait_for_selector("#detail:not([hidden])")
    assert page.locator("#detail-id").inner_text() == "dev-03-healthy"
    assert page.locator("#detail-state").inner_text() == "healthy"

    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("#revoke-btn")
    page.wait_for_function("document.querySelector('#detail-state').textContent === 'revoked'")
    assert dialogs and "dev-03-healthy" in dialogs[0]
    row.locator(".lifecycle .badge.revoked").wait_for()
    assert (
        page.locator("#detail-audit li").first.inner_text().endswith("revoked from the dashboard")
    )
    page.wait_for_function("document.querySelector('#count-revoked').textContent === '3'")
    assert admin_counts(fleet)["revoked"] == 3

    page.fill("#search", "")
    page.wait_for_function("document.querySelectorAll('#devices tbody tr').length > 1")
    target = screenshot_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 0


def test_dismissing_the_dialog_changes_nothing(fleet: Fleet, page: Any) -> None:
    page.goto(f"{fleet.base_url}/dashboard/")
    page.wait_for_selector("body[data-loaded=true]")
    page.locator("#devices tbody tr[data-device='dev-04-healthy']").click()
    page.wait_for_selector("#detail:not([hidden])")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#disable-btn")
    page.wait_for_timeout(500)
    assert admin_counts(fleet)["disabled"] == 1
    assert page.locator("#detail-state").inner_text() == "healthy"


def test_locked_dashboard_asks_for_the_token(tmp_path: Path, page: Any) -> None:
    with fleet_server(tmp_path / "locked", development=False, populate=False) as locked:
        page.goto(f"{locked.base_url}/dashboard/")
        page.wait_for_selector("#login:not([hidden])")
        page.fill("#token", "wrong")
        page.click("#login-form button")
        page.wait_for_function(
            "document.querySelector('#login-error').textContent.includes('not accepted')"
        )
        page.fill("#token", locked.token)
        page.click("#login-form button")
        page.wait_for_selector("body[data-loaded=true]")
        assert page.locator("#count-healthy").inner_text() == "0"
        stored = page.evaluate("sessionStorage.getItem('certhub.dashboard.token')")
        assert stored == locked.token
