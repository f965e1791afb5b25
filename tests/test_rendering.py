"""The rendered book, checked in a real browser (headless Debian Chromium driven by Selenium).

The book is built once per session at the ``smoke`` preset, with warnings as errors, into a
temporary folder and with an empty result cache (so every notebook really trains and evaluates).
It is served on 127.0.0.1 and every page of ``_toc.yml`` is opened in Chromium: each has a title,
every image on it loads, every page built from a notebook shows at least one figure, no Python
traceback appears, and every link inside the book answers HTTP 200 (and its #anchor exists). On
the appendix page and the distribution-shift chapter, the ``to_jshtml`` slider is moved by script
and the frame shown must change.

Nothing downloads a browser: Chromium and its driver are the Debian packages ``chromium`` and
``chromium-driver`` (``.ci/run`` installs them). Where they are missing the browser tests are
skipped, unless ``UNI_ICL_REQUIRE_BROWSER=1`` (set by CI), which turns that into a failure.
``UNI_ICL_BOOK_HTML=<folder>`` reuses an existing build instead of building (for development).
"""

from __future__ import annotations

import functools
import html
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1600",
    # The book must work offline: every host but the local server fails at once (no waiting on a CDN).
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)
PAGES_WITHOUT_FIGURES = {"book/00_intro"}  # markdown pages with no code: nothing to plot
SLIDER_PAGES = ("book/90_reading_the_figures", "book/04_shift")
BUILD_TIMEOUT_S = 1500  # a last resort: the watchdog fails a stalled build after minutes


def toc_pages() -> list[str]:
    """Every page of _toc.yml, in reading order (paths without suffix, relative to the root)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            for key in ("chapters", "sections", "parts"):
                walk(entry.get(key))

    walk(toc.get("parts") or toc.get("chapters") or [])
    return pages


@dataclass
class Build:
    html: Path
    returncode: int
    log: str
    seconds: float


@pytest.fixture(scope="session")
def book() -> Build:
    """The book built at smoke with -W (or the folder named by UNI_ICL_BOOK_HTML)."""
    prebuilt = os.environ.get("UNI_ICL_BOOK_HTML")
    if prebuilt:
        return Build(Path(prebuilt), 0, "(prebuilt)", 0.0)
    out = Path(tempfile.mkdtemp(prefix="uni_icl_book_"))
    env = {
        **os.environ,
        "UNI_ICL_PRESET": "smoke",
        "UNI_ICL_CACHE": str(out / "cache"),
        "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter"),  # the python3 kernel of this environment
    }
    env.pop("MPLBACKEND", None)  # a non-inline backend would silently drop every figure
    command = [sys.executable, "-m", "uni_icl.book.build", "--output", str(out / "site"), "--silence", "120"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT_S, cwd=ROOT)
    seconds = time.perf_counter() - started
    print(f"book built at smoke in {seconds:.1f} s")
    return Build(out / "site" / "_build" / "html", done.returncode, done.stdout + done.stderr, seconds)


@pytest.fixture(scope="session")
def built(book: Build) -> Path:
    if book.returncode != 0:
        pytest.fail("the book did not build (see test_book_builds_with_warnings_as_errors)")
    return book.html


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


def serve(folder: Path):
    """Serve ``folder`` on 127.0.0.1 at a free port in a thread; returns (server, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture(scope="session")
def site(built: Path):
    server, base = serve(built)
    yield base
    server.shutdown()


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium with a fresh profile, driven by Selenium through chromium-driver."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        message = f"missing {', '.join(missing)}: apt-get install -y chromium chromium-driver"
        if os.environ.get("UNI_ICL_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or driver
    profile = tempfile.mkdtemp(prefix="uni_icl_chromium_")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


PAGE_FACTS_JS = """
const article = document.querySelector('article') || document.body;
const images = Array.from(document.images).map(img => ({
    src: img.currentSrc || img.src || '', loaded: img.complete && img.naturalWidth > 0,
    // a figure: an image in the article that is not a frame of a to_jshtml animation (checked apart)
    figure: article.contains(img) && !img.closest('.animation')}));
const outputs = Array.from(document.querySelectorAll('.cell_output, .output')).map(el => el.innerText).join('\\n');
return {
    title: document.title,
    h1: Array.from(article.querySelectorAll('h1')).map(h => h.innerText.trim()).filter(Boolean),
    images: images,
    text: document.body.innerText,
    outputs: outputs,
    error_outputs: document.querySelectorAll('.output.error, .output.traceback').length,
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
};
"""

ERROR_LINE = re.compile(r"\b[A-Z]\w*(Error|Exception):")
# folders of the machine that built the book: none may appear in a page
MACHINE_PATHS = tuple(
    sorted({f"{Path(p).as_posix().rstrip('/')}/" for p in (Path.home(), ROOT, tempfile.gettempdir())})
)
# a table's |---| line left unrendered (typography may have turned --- into an em dash)
RAW_PIPE_TABLE = re.compile(r"\|\s*:?(?:-{3,}|[\u2013\u2014]+):?\s*\|")


def open_page(driver, url: str) -> dict:
    driver.get(url)
    deadline = time.monotonic() + 30
    while driver.execute_script("return document.readyState") != "complete":
        if time.monotonic() > deadline:
            raise AssertionError(f"{url}: did not finish loading in 30 s")
        time.sleep(0.1)
    # Images may still be decoding just after the load event; give them a moment.
    for _ in range(20):
        facts = driver.execute_script(PAGE_FACTS_JS)
        if all(image["loaded"] for image in facts["images"]):
            break
        time.sleep(0.1)
    return facts


@functools.cache
def _fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""


def page_problems(driver, url: str, base: str, *, needs_figure: bool) -> list[str]:
    """Everything wrong with the page at ``url`` as a reader would see it (empty list: fine)."""
    facts = open_page(driver, url)
    problems = []
    if not facts["title"].strip():
        problems.append("no <title>")
    if not facts["h1"]:
        problems.append("no heading (h1) in the page")
    broken = [image["src"][:120] for image in facts["images"] if not image["loaded"]]
    if broken:
        problems.append(f"images that do not load: {broken}")
    figures = [image for image in facts["images"] if image["figure"] and image["loaded"]]
    if needs_figure and not figures:
        problems.append("no figure image in the page")
    if "Traceback (most recent call last)" in facts["text"] or facts["error_outputs"]:
        problems.append("a Python traceback or error output is shown")
    paths = [path for path in MACHINE_PATHS if path in facts["text"]]
    if paths:
        problems.append(f"a machine path in the page: {paths}")
    if RAW_PIPE_TABLE.search(facts["outputs"]):
        problems.append("a Markdown pipe table shown as raw text in a cell output")
    errors = ERROR_LINE.findall(facts["outputs"])
    if errors:
        problems.append(f"error text in cell outputs: {sorted(set(errors))}")
    for link in sorted(set(facts["links"])):
        if not link.startswith(base):
            continue
        target, fragment = urldefrag(link)
        status, body = _fetch(target)
        if status != 200:
            problems.append(f"link {link}: HTTP {status}")
        elif fragment and f'id="{html.escape(fragment)}"' not in body and f"id='{fragment}'" not in body:
            problems.append(f"link {link}: no element with id {fragment!r} on the target page")
    return problems


def test_book_builds_with_warnings_as_errors(book: Build) -> None:
    assert book.returncode == 0, f"the book build (-W) failed:\n{book.log[-8000:]}"
    for page in toc_pages():
        assert (book.html / f"{page}.html").is_file(), f"{page}: no HTML page was built"


@pytest.mark.parametrize("page", toc_pages())
def test_page_renders_in_chromium(page: str, site: str, browser) -> None:
    problems = page_problems(browser, f"{site}{page}.html", site, needs_figure=page not in PAGES_WITHOUT_FIGURES)
    assert not problems, f"{page}: " + "; ".join(problems)


def test_every_page_is_reachable_from_the_first(site: str, browser) -> None:
    facts = open_page(browser, site)  # index.html redirects to the first page
    linked = {urldefrag(link)[0] for link in facts["links"]}
    missing = [page for page in toc_pages() if f"{site}{page}.html" not in linked]
    assert not missing, f"pages not linked from the navigation of the first page: {missing}"


@pytest.mark.parametrize("slider_page", SLIDER_PAGES)
def test_slider_changes_frame_when_moved(site: str, browser, slider_page: str) -> None:
    open_page(browser, f"{site}{slider_page}.html")
    state = """
        const slider = document.querySelector('.animation input[type=range]');
        const image = document.querySelector('.animation img');
        if (!slider || !image) return null;
        return {src: image.src, value: slider.value, max: slider.max, loaded: image.naturalWidth > 0};
    """
    deadline = time.monotonic() + 10
    before = browser.execute_script(state)
    while before is not None and not before["src"].startswith("data:image") and time.monotonic() < deadline:
        time.sleep(0.1)
        before = browser.execute_script(state)
    assert before is not None, f"{slider_page}: no to_jshtml animation (slider and frame image) on the page"
    assert before["src"].startswith("data:image") and before["loaded"], "the first frame is not shown"
    assert int(before["max"]) >= 1, "the animation has a single frame: nothing to slide over"
    browser.execute_script(
        """const slider = document.querySelector('.animation input[type=range]');
        slider.value = slider.max;
        slider.dispatchEvent(new Event('input', {bubbles: true}));"""
    )
    time.sleep(0.3)
    after = browser.execute_script(state)
    assert after["value"] == after["max"]
    assert after["src"] != before["src"], "moving the slider did not change the frame shown"
    assert after["loaded"], "the frame shown after moving the slider does not load"


def test_checks_catch_a_broken_page(tmp_path: Path, browser) -> None:
    """The page checks fail on a page with a missing figure, a traceback, a raw pipe table, a machine path
    and a dead link."""
    (tmp_path / "broken.html").write_text(
        '<html><head><meta charset="utf-8"><title>Broken</title></head><body><article><h1>Broken</h1>'
        '<img src="missing.png"><div class="cell_output"><pre>Traceback (most recent call last):\n'
        f'ValueError: boom</pre></div><div class="cell_output"><p>cache: {Path.home()}/.cache/uni_icl</p>'
        "<p>| a | b |\n|\u2014|\u2014|\n| 1 | 2 |</p></div>"
        '<a href="gone.html">gone</a></article></body></html>',
        encoding="utf-8",
    )
    server, base = serve(tmp_path)
    try:
        problems = "; ".join(page_problems(browser, f"{base}broken.html", base, needs_figure=True))
    finally:
        server.shutdown()
    expected_problems = (
        "images that do not load",
        "no figure image",
        "traceback",
        "error text",
        "raw text",
        "machine path",
    )
    for expected in (*expected_problems, "gone.html: HTTP 404"):
        assert expected in problems, f"the checks missed {expected!r}: {problems}"
