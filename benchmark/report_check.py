"""Open the HTML report (``snakemake --report``) in headless Chromium as a reader would:
visit every result of every category, check that each figure and table really renders,
save a screenshot of each, and collect the browser console's errors.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and the
``selenium`` package (the ``test`` extra).
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


@dataclass
class ReportCheck:
    viewed: dict[str, str] = field(default_factory=dict)  # result name -> "image" | "html" | "download"
    failed: dict[str, str] = field(default_factory=dict)  # result name -> why
    console_errors: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.viewed) and not self.failed and not self.console_errors


def find_browser() -> tuple[str, str] | None:
    browser = next((shutil.which(b) for b in CHROMIUM if shutil.which(b)), None)
    driver = next((shutil.which(d) for d in DRIVER if shutil.which(d)), None)
    return (browser, driver) if browser and driver else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def check_report(report: Path, out_dir: Path, timeout_s: float = 30.0) -> ReportCheck:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    found = find_browser()
    if found is None:
        raise FileNotFoundError("chromium and chromedriver not found (Debian: apt-get install chromium "
                                "chromium-driver)")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = found[0]
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = Path(report).resolve().as_uri()
    check = ReportCheck()

    def wait_for(find, what):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = find()
            if found:
                return found
            time.sleep(0.1)
        raise TimeoutError(f"{report}: {what} did not appear within {timeout_s:.0f} s")

    def nav_link(text):
        return wait_for(lambda: driver.find_elements(By.XPATH, f"//nav//a[normalize-space()='{text}']"),
                        f"menu entry {text!r}")[0]

    def open_page():
        driver.get(url)
        return [a.text for a in wait_for(
            lambda: driver.find_elements(By.XPATH, "//nav//a[normalize-space()='About']/following::a[ancestor::nav]"
                                                   "[normalize-space()!='']"), "the results menu")]

    def rows():
        return driver.find_elements(By.XPATH, "//nav//tr[.//a[@iconname='eye']]")

    last_src = None  # the view shown before a click, so a stale one is never taken for the new one
    try:
        categories = open_page()
        driver.save_screenshot(str(out_dir / "00-home.png"))
        check.screenshots.append(out_dir / "00-home.png")
        for category in categories:
            open_page()
            nav_link(category).click()
            # a category lists its results, or its subcategories (links after its own in the menu)
            subcategories_xpath = (f"//nav//a[normalize-space()='{category}']/following::a[ancestor::nav]"
                                   "[normalize-space()!='']")
            listed = wait_for(lambda xpath=subcategories_xpath: rows() or driver.find_elements(By.XPATH, xpath),
                              f"the contents of {category}")
            groups = [None] if rows() else [a.text for a in listed]
            for group in groups:
                if group is not None:
                    open_page()
                    nav_link(category).click()
                    nav_link(group).click()
                for row in wait_for(rows, f"results of {category}/{group}"):
                    name = row.find_element(By.XPATH, "./td[1]").text.strip()
                    eye = row.find_element(By.XPATH, ".//a[@iconname='eye']")
                    if eye.get_attribute("download"):  # a file the report offers as a download (CSV)
                        href = eye.get_attribute("href") or ""
                        if href.startswith("data:") and len(href) > len("data:text/csv;base64,"):
                            check.viewed[name] = "download"
                        else:
                            check.failed[name] = "failed: empty download link"
                        continue
                    eye.click()
                    kind, last_src = _view_kind(driver, By, wait_for, name, last_src)
                    shot = out_dir / f"{_slug(category)}-{_slug(group or '')}-{_slug(name)}.png".replace("--", "-")
                    driver.save_screenshot(str(shot))
                    check.screenshots.append(shot)
                    if kind.startswith("failed"):
                        check.failed[name] = kind
                    else:
                        check.viewed[name] = kind
        check.console_errors = [entry["message"] for entry in driver.get_log("browser")
                                if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
    return check


def _view_kind(driver, By, wait_for, name: str, last_src: str | None) -> tuple[str, str | None]:
    """('image' | 'html', its src) once the result is shown and really rendered, else
    ('failed: why', last_src)."""
    def new_view():
        views = driver.find_elements(By.XPATH, "//nav/following-sibling::div//img | "
                                               "//nav/following-sibling::div//iframe")
        return [v for v in views if v.get_attribute("src") != last_src]

    try:
        shown = wait_for(new_view, f"the view of {name}")[0]
    except TimeoutError as exc:
        return f"failed: {exc}", last_src
    src = shown.get_attribute("src")
    if shown.tag_name == "img":
        decoded = wait_for(lambda: driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0;", shown), f"{name} decoding")
        return ("image" if decoded else "failed: image did not decode"), src
    driver.switch_to.frame(shown)
    try:
        wait_for(lambda: driver.find_elements(By.TAG_NAME, "td"), f"the table in {name}")
        return "html", src
    except TimeoutError as exc:
        return f"failed: {exc}", src
    finally:
        driver.switch_to.default_content()


def run_check_report(report: Path, out_dir: Path) -> None:
    """The ``check-report`` command: print what rendered; stop if anything did not."""
    from benchmark.errors import BenchmarkError

    try:
        check = check_report(Path(report), Path(out_dir))
    except (FileNotFoundError, TimeoutError) as exc:
        raise BenchmarkError(f"check-report: {exc}") from None
    for name, kind in check.viewed.items():
        print(f"ok      {kind:5s}  {name}")
    for name, why in check.failed.items():
        print(f"FAILED  {name}: {why}")
    for message in check.console_errors:
        print(f"console error: {message}")
    print(f"check-report: {len(check.viewed)} results rendered, {len(check.failed)} failed, "
          f"{len(check.console_errors)} console errors; screenshots in {out_dir}")
    if not check.ok:
        raise BenchmarkError(f"check-report: {report} did not render cleanly (see above)")
