"""A full login in headless Chromium (Debian's package, driven through chromedriver): the IdP's
form, the POST back to the gateway, and the Streamlit page rendered over the proxied
WebSocket. The screenshot is kept in target/e2e/."""

import json
import shutil
import tempfile

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            pytest.fail(f"{path} is missing: scripts/setup.sh installs chromium and "
                        "chromium-driver")
    profile = tempfile.mkdtemp(prefix="e2e-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_browser_login_renders_the_app_with_the_users_identity(bed, browser):
    mark = bed.audit_mark()
    browser.get(bed.url + "/")
    wait = WebDriverWait(browser, 30)

    # The gateway sent the browser to the IdP's own login form.
    wait.until(ec.presence_of_element_located((By.NAME, "password")))
    assert browser.current_url.startswith(bed.idp.base_url)
    browser.find_element(By.NAME, "username").send_keys("alice")
    browser.find_element(By.NAME, "password").send_keys("alice-pass")
    browser.find_element(By.NAME, "password").submit()

    # Back at the gateway: the page text comes over Streamlit's WebSocket through the proxy.
    # Streamlit renders element by element: wait for each text rather than read the page once.
    for text in ("Signed in as Alice Analyst", "alice@example.test", "analytics, staff"):
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), text))
    assert browser.current_url == bed.url + "/"
    # The app's dump of what it received: no cookie of the gateway's or the IdP's.
    code = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '[data-testid="stCode"]')))
    dump = json.loads(code.text)
    assert all(not c.startswith(("saml-", "SimpleSAML")) for c in dump["cookies"]), dump
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser-login.png"))

    # The session cookie is HttpOnly, so page scripts cannot read it.
    names = {c["name"]: c for c in browser.get_cookies()}
    assert names["saml-session"]["httpOnly"] is True
    assert "saml-session" not in browser.execute_script("return document.cookie")

    events = [r["event"] for r in bed.audit_since(mark)]
    assert events == ["login_start", "login_success"]
