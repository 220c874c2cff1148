"""The console in a real browser: Debian's Chromium, driven by Selenium through its ChromeDriver,
at a phone's width (360 px). Screenshots of every page go to ``tests/console/artifacts/`` (not
committed) to be looked at. Without Chromium the tests skip, saying so (``.ci/run`` installs it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db import fleet, ledger
from db.models import OperatorAction, Posting
from tests.console.conftest import PASSWORD, ConsoleWorld

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).parent / "artifacts"
PHONE_WIDTH = 360

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="no Chromium: install Debian's chromium and chromium-driver (.ci/run does) to run the browser tests",
)


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    # A phone's screen: a window cannot be made this narrow, an emulated device can.
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": PHONE_WIDTH, "height": 800, "pixelRatio": 1}})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(2)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def click(browser, element) -> None:  # type: ignore[no-untyped-def]
    """Click, and wait for the next page to replace this one (every action here is a form post
    or a link)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    page = browser.find_element("tag name", "html")
    element.click()

    def replaced(_) -> bool:  # type: ignore[no-untyped-def]
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as error:  # ChromeDriver's word for it mid-navigation, at times
            if "does not belong to the document" in str(error):
                return True
            raise
        return False

    WebDriverWait(browser, 10).until(replaced)


def log_in(browser, console: ConsoleWorld, username: str, password: str = PASSWORD) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    browser.get(f"{console.url}/login")
    browser.find_element(By.XPATH, "//label[normalize-space(text())='Username']/input").send_keys(username)
    browser.find_element(By.XPATH, "//label[normalize-space(text())='Password']/input").send_keys(password)
    click(browser, browser.find_element(By.XPATH, "//button[normalize-space()='Log in']"))


def log_out(browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    click(browser, browser.find_element(By.XPATH, "//header//button[starts-with(normalize-space(), 'Log out')]"))


def shot(browser, name: str) -> None:  # type: ignore[no-untyped-def]
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def fits_the_phone(browser) -> bool:  # type: ignore[no-untyped-def]
    """Nothing but the tables' own scrolling boxes is wider than the screen."""
    return browser.execute_script("return document.documentElement.scrollWidth") <= PHONE_WIDTH


def test_four_eyes_in_the_browser_from_asking_to_the_audit_log(console: ConsoleWorld, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    log_in(browser, console, "omar")
    assert "Today" in browser.find_element(By.TAG_NAME, "h1").text
    click(browser, browser.find_element(By.LINK_TEXT, "Unmatched"))
    assert "no vehicle 999" in browser.page_source  # why it is in suspense
    row = browser.find_element(By.XPATH, f"//tr[td[normalize-space()='{console.receipt}']]")
    row.find_element(By.NAME, "driver").send_keys(console.driver)
    Select(row.find_element(By.NAME, "as")).select_by_visible_text("driver paid")
    row.find_element(By.NAME, "reason").send_keys("paid to the wrong account")
    shot(browser, "unmatched")
    click(browser, row.find_element(By.XPATH, ".//button[normalize-space()='Ask to assign']"))
    assert "another person must approve it" in browser.page_source
    click(browser, browser.find_element(By.LINK_TEXT, "Requests"))
    assert "paid to the wrong account" in browser.page_source
    assert not browser.find_elements(By.XPATH, "//button[normalize-space()='Approve']")  # an operator asks, never approves
    log_out(browser)

    log_in(browser, console, "abby")
    click(browser, browser.find_element(By.LINK_TEXT, "Requests"))
    shot(browser, "requests")
    click(browser, browser.find_element(By.XPATH, "//button[normalize-space()='Approve']"))
    assert "approved and done" in browser.find_element(By.CSS_SELECTOR, "[role=status]").text
    with console.sessions() as session:
        assert session.execute(select(func.count()).select_from(Posting).where(
            Posting.idempotency_key == f"assign:{console.receipt}")).scalar_one() == 1
        accounts = ledger.driver_accounts(session, fleet.get_driver(session, console.driver).id)
        assert ledger.balance_cents(session, accounts.target) + ledger.balance_cents(session, accounts.deposit) == 35_000
        who = {(a.action, a.operator) for a in session.execute(select(OperatorAction)).scalars()}
    assert {("money_requested", "omar"), ("money_request_approved", "abby")} <= who
    click(browser, browser.find_element(By.LINK_TEXT, "Audit log"))
    shot(browser, "audit")
    assert "money_request_approved" in browser.page_source and "omar" in browser.page_source


def test_every_page_is_usable_on_a_phone(console: ConsoleWorld, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    from tests.books.test_payout_races import funded_payout

    payout = funded_payout(console.sessions)
    browser.get(f"{console.url}/login")
    shot(browser, "login")
    assert fits_the_phone(browser)
    log_in(browser, console, "adam")
    for name, path in (("dashboard", "/"), ("drivers", "/drivers"), ("driver", f"/drivers/{console.driver}"),
                       ("vehicles", "/vehicles"), ("unmatched", "/unmatched"), ("requests", "/requests"),
                       ("payouts", "/payouts"), ("payout", f"/payouts/{payout.id}"), ("books", "/books"),
                       ("dlq", "/dlq"), ("audit", "/audit"), ("users", "/users")):
        browser.get(f"{console.url}{path}")
        shot(browser, f"phone-{name}")
        assert browser.find_element(By.TAG_NAME, "h1").is_displayed(), path
        assert fits_the_phone(browser), f"{path} is wider than {PHONE_WIDTH} px"


def test_a_wrong_password_is_said_plainly(console: ConsoleWorld, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    log_in(browser, console, "omar", "not the password")
    assert "wrong username or password" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
