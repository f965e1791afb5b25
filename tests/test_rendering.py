"""The rendered book, checked in a real browser (headless Debian Chromium driven by Selenium).

The book is built once per session at the ``smoke`` preset, with warnings as errors, into a
temporary folder and with an empty result cache (so every notebook really trains and evaluates).
It is served on 127.0.0.1 and every page of ``_toc.yml`` is opened in Chromium: each has a title,
every image on it loads, every page built from a notebook shows at least one figure, no Python
traceback appears, and every link inside the book answers HTTP 200 (and its #anchor exists). On
the appendix page and the distribution-shift chapter, the ``to_jshtml`` slider is moved by script
and the frame shown must change. A static page shows no widget (the live explorers are built only in a
running kernel) and no progress bar.

The book must read the same offline: Chromium resolves no host but the local server, no page loads a
script from another host (require.js, the Jupyter widgets loader, MathJax: a CDN), MathJax must come
from the book itself (``_static/mathjax``) and finish typesetting, and no raw TeX
delimiter (backslash-parenthesis, backslash-bracket, ``$$``, ...) may be left in the text of a page. Citations read
author-year ("Akyürek et al. (2023)"), never an alpha label ("[AkyurekSA+23]"); a file name is
never turned into a web link ("http://PAPER.md"); the sidebar numbers the chapters as the intro
does. The book's palette (``uni_icl.book.palette``) is checked without a browser: learners shown
together have distinct colours, far apart also for colour-blind readers (simulated).

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

import matplotlib.image
import numpy as np
import pytest
import yaml

from uni_icl.book.palette import BOOK_DPI

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# The browser window, in CSS pixels, for the whole session: set once by --window-size when the
# session's Chromium starts and never resized (every test shares the one ``browser`` fixture), a
# laptop's browser window. ``page_problems`` checks that each page really sees this width, since
# the figure check below (MIN_FIGURE_SCALE) is stated at this width.
WINDOW = (1280, 1600)
# Figures must stay readable where the page shrinks them into its text column. The rule: the body
# text of a figure, matplotlib's default 10 pt (seaborn's notebook theme, which the book uses, draws
# tick labels at 11 pt and axis labels at 12 pt), is drawn at the book's 150 dpi (BOOK_DPI in
# uni_icl.book.palette) as 10/72 in * 150 px/in = 20.8 px in the image; on screen a reader needs it
# at least 9 CSS px (the page's own text is 16 px; below 9 px text is read only by zooming). So each
# figure must be displayed at no less than 9 / 20.8 = 0.43 of its natural width, at the width of
# WINDOW. (A 9.5-inch figure, 1425 px, needs a text column of at least 616 px; a 15-inch one 972 px.)
FIGURE_TEXT_PT = 10.0
FIGURE_DPI = BOOK_DPI  # 150: the dots per inch of every figure of the book
MIN_TEXT_PX = 9.0
MIN_FIGURE_SCALE = MIN_TEXT_PX / (FIGURE_TEXT_PT / 72 * FIGURE_DPI)  # about 0.43
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
    f"--window-size={WINDOW[0]},{WINDOW[1]}",  # the one window of the whole run (see WINDOW)
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
    driver.set_script_timeout(MATHJAX_TIMEOUT_S + 5)
    yield driver
    driver.quit()


MATHJAX_TIMEOUT_S = 30
# Waits until MathJax has typeset the page (or says why it cannot); run before PAGE_FACTS_JS.
MATHJAX_JS = """
const done = arguments[arguments.length - 1];
const sources = Array.from(document.scripts).map(s => s.src).filter(src => /mathjax/i.test(src));
const startup = window.MathJax && window.MathJax.startup;
if (!sources.length) { done({sources: sources, state: 'not used'}); return; }
if (!startup || !startup.promise) { done({sources: sources, state: 'not loaded'}); return; }
const timer = setTimeout(() => done({sources: sources, state: 'still typesetting'}), TIMEOUT_MS);
startup.promise.then(
    () => { clearTimeout(timer); done({sources: sources, state: 'typeset'}); },
    error => { clearTimeout(timer); done({sources: sources, state: 'failed: ' + error}); });
""".replace("TIMEOUT_MS", str(MATHJAX_TIMEOUT_S * 1000))

PAGE_FACTS_JS = """
const article = document.querySelector('article') || document.body;
// the text a reader sees outside code and typeset formulas: where raw TeX must not remain
const prose = article.cloneNode(true);
prose.querySelectorAll('pre, code, script, style, mjx-container').forEach(el => el.remove());
const images = Array.from(document.images).map(img => ({
    src: img.currentSrc || img.src || '', loaded: img.complete && img.naturalWidth > 0,
    // a figure: an image in the article that is not a frame of a to_jshtml animation (checked apart)
    figure: article.contains(img) && !img.closest('.animation'),
    // its width on screen (CSS px, 0 when not rendered, e.g. in a closed toggle) and in the file
    displayed: img.getClientRects().length ? img.getBoundingClientRect().width : 0,
    natural: img.naturalWidth}));
const outputs = Array.from(document.querySelectorAll('.cell_output, .output')).map(el => el.innerText).join('\\n');
return {
    title: document.title,
    window: [window.innerWidth, window.innerHeight],
    h1: Array.from(article.querySelectorAll('h1')).map(h => h.innerText.trim()).filter(Boolean),
    images: images,
    text: document.body.innerText,
    outputs: outputs,
    error_outputs: document.querySelectorAll('.output.error, .output.traceback').length,
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    prose: prose.textContent,
    math_errors: document.querySelectorAll('mjx-merror').length,
    scripts: Array.from(document.scripts).map(s => s.src).filter(Boolean),
    // ipywidgets (an explorer, a tqdm bar) rendered or waiting for a widget manager: dead in a static page
    widgets: document.querySelectorAll(
        'script[type^="application/vnd.jupyter.widget"], .jupyter-widgets, .widget-subarea, progress').length,
    sidebar: Array.from(document.querySelectorAll('nav.bd-docs-nav a.reference.internal'))
        .map(a => ({href: a.href, text: a.innerText.trim()})),
    chapter_links: Array.from(article.querySelectorAll('a.reference.internal'))
        .map(a => ({href: a.href, text: a.innerText.trim()}))
        .filter(link => /^Chapter \\d+/.test(link.text)),
};
"""

ERROR_LINE = re.compile(r"\b[A-Z]\w*(Error|Exception):")
# folders of the machine that built the book: none may appear in a page
MACHINE_PATHS = tuple(
    sorted({f"{Path(p).as_posix().rstrip('/')}/" for p in (Path.home(), ROOT, tempfile.gettempdir())})
)
# an absolute path of some machine (a cache, a checkout, a temporary folder), wherever it was built:
# "/home/ci/.cache/uni_icl", "/tmp/uni_icl_book_x/cache", "/content/uni-icl/results"
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:home|root|tmp|work|Users|var|opt|mnt|srv|content|private)/[\w.~-]+")
# a table's |---| line left unrendered (typography may have turned --- into an em dash)
RAW_PIPE_TABLE = re.compile(r"\|\s*:?(?:-{3,}|[\u2013\u2014]+):?\s*\|")
# TeX that MathJax should have typeset: inline or display delimiters, an environment
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{")
# a text progress bar (tqdm without widgets) left in a cell output: "42%|████      | 8/19"
TEXT_PROGRESS_BAR = re.compile(r"\d+%\|[^|\n]{0,80}\|\s*\d+/\d+")
# a citation in the alpha label style ("[AkyurekSA+23]", "[GTLV22]") instead of author-year
ALPHA_CITATION = re.compile(r"\[[A-Z][A-Za-z]*\+?\d{2}\]")
# a file name that linkify turned into a web address ("http://PAPER.md")
FILE_NAME_LINK = re.compile(r"^https?://[^/]+\.(?:md|py|ipynb|txt|yml|yaml|toml|json|csv)/?$", re.IGNORECASE)


def open_page(driver, url: str) -> dict:
    driver.get(url)
    deadline = time.monotonic() + 30
    while driver.execute_script("return document.readyState") != "complete":
        if time.monotonic() > deadline:
            raise AssertionError(f"{url}: did not finish loading in 30 s")
        time.sleep(0.1)
    mathjax = driver.execute_async_script(MATHJAX_JS)
    # Images may still be decoding just after the load event; give them a moment.
    for _ in range(20):
        facts = driver.execute_script(PAGE_FACTS_JS)
        if all(image["loaded"] for image in facts["images"]):
            break
        time.sleep(0.1)
    return {**facts, "mathjax": mathjax}


@functools.cache
def _fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""


def _image_name(src: str) -> str:
    return "embedded" if src.startswith("data:") else src.rsplit("/", 1)[-1][:16]


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
    if facts["window"][0] != WINDOW[0]:
        problems.append(f"the page is {facts['window'][0]} px wide, not the {WINDOW[0]} px the checks assume")
    squeezed = [
        f"figure {number} of {len(figures)}, {_image_name(image['src'])} "
        f"({image['displayed']:.0f} of {image['natural']} px, {image['displayed'] / image['natural']:.2f})"
        for number, image in enumerate(figures, start=1)
        if image["displayed"] > 0 and image["displayed"] / image["natural"] < MIN_FIGURE_SCALE
    ]
    if squeezed:
        problems.append(
            f"figures shrunk below {MIN_FIGURE_SCALE:.2f} of their width, text unreadably small "
            f"(make them narrower, at most ~9.5 in at {FIGURE_DPI} dpi): {squeezed}"
        )
    if "Traceback (most recent call last)" in facts["text"] or facts["error_outputs"]:
        problems.append("a Python traceback or error output is shown")
    paths = [path for path in MACHINE_PATHS if path in facts["text"]]
    paths += sorted(set(ABSOLUTE_PATH.findall(facts["prose"] + "\n" + facts["outputs"])))
    if paths:
        problems.append(f"a machine path in the page: {paths}")
    if RAW_PIPE_TABLE.search(facts["outputs"]):
        problems.append("a Markdown pipe table shown as raw text in a cell output")
    errors = ERROR_LINE.findall(facts["outputs"])
    if errors:
        problems.append(f"error text in cell outputs: {sorted(set(errors))}")
    scripts = sorted({src for src in facts["scripts"] if not src.startswith(base)})
    if scripts:
        problems.append(f"scripts loaded from outside the book (a CDN, unreachable offline): {scripts}")
    if facts["widgets"]:
        problems.append(
            f"{facts['widgets']} widget or progress-bar elements in the static page (dead without a kernel)"
        )
    if TEXT_PROGRESS_BAR.search(facts["outputs"]):
        problems.append("a text progress bar in a cell output")
    mathjax = facts["mathjax"]
    outside = [src for src in mathjax["sources"] if not src.startswith(base)]
    if outside:
        problems.append(f"MathJax loaded from outside the book (a CDN): {outside}")
    if mathjax["state"] not in ("typeset", "not used"):
        problems.append(f"MathJax {mathjax['state']} (sources: {mathjax['sources']})")
    raw_tex = sorted(set(RAW_TEX.findall(facts["prose"])))
    if raw_tex:
        problems.append(f"raw TeX left in the page text (MathJax did not typeset it): {raw_tex}")
    if facts["math_errors"]:
        problems.append(f"{facts['math_errors']} formulas MathJax could not typeset (TeX errors)")
    labels = sorted(set(ALPHA_CITATION.findall(facts["text"])))
    if labels:
        problems.append(f"citations in the alpha label style, not author-year: {labels}")
    file_links = sorted({link for link in facts["links"] if FILE_NAME_LINK.match(link)})
    if file_links:
        problems.append(f"file names turned into web links: {file_links}")
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
    """The page checks fail on a page with a missing figure, a traceback, a raw pipe table, a machine path,
    a dead link, MathJax from a CDN (which cannot load offline), raw TeX, an alpha citation label, a
    file name linkified into a web address, a script from a CDN (require.js), a widget, a progress bar,
    and a figure far too wide for the text column (20 inches at 150 dpi, shrunk to fit 700 px)."""
    # figures 20 and 9.5 inches wide at the book's dpi, in a column of 700 px whose images are no wider
    # than it (as in the book's theme): the first is shrunk to 0.23 of its width, the second to 0.49
    for name, inches in (("wide.png", 20), ("fits.png", 9.5)):
        matplotlib.image.imsave(tmp_path / name, np.ones((40, round(inches * FIGURE_DPI), 3)))
    (tmp_path / "squeezed.html").write_text(
        '<html><head><meta charset="utf-8"><title>Squeezed</title>'
        "<style>article { max-width: 700px; } img { max-width: 100%; }</style></head>"
        '<body><article><h1>Squeezed</h1><img src="wide.png"><img src="fits.png"></article></body></html>',
        encoding="utf-8",
    )
    (tmp_path / "broken.html").write_text(
        '<html><head><meta charset="utf-8"><title>Broken</title>'
        '<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
        "</head><body><article><h1>Broken</h1>"
        '<img src="missing.png"><div class="cell_output"><pre>Traceback (most recent call last):\n'
        f'ValueError: boom</pre></div><div class="cell_output"><p>cache: {Path.home()}/.cache/uni_icl</p>'
        "<p>| a | b |\n|\u2014|\u2014|\n| 1 | 2 |</p></div>"
        '<div class="cell_output"><pre>results: /srv/builder/uni_icl_cache/models</pre></div>'
        '<p>A formula <span class="math">\\(x^2\\)</span>, as shown in [AkyurekSA+23], see '
        '<a href="http://PAPER.md">PAPER.md</a>.</p>'
        '<a href="gone.html">gone</a>'
        '<script src="https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js"></script>'
        '<div class="cell_output"><script type="application/vnd.jupyter.widget-view+json">'
        '{"model_id": "0", "version_major": 2}</script>'
        "<pre>training  42%|████      | 8/19 [00:01&lt;00:02]</pre></div>"
        "</article></body></html>",
        encoding="utf-8",
    )
    server, base = serve(tmp_path)
    try:
        problems = "; ".join(page_problems(browser, f"{base}broken.html", base, needs_figure=True))
        squeezed = page_problems(browser, f"{base}squeezed.html", base, needs_figure=True)
    finally:
        server.shutdown()
    expected_problems = (
        "images that do not load",
        "no figure image",
        "traceback",
        "error text",
        "raw text",
        "machine path",
        "MathJax loaded from outside the book",
        "MathJax not loaded",
        "raw TeX",
        "alpha label",
        "file names turned into web links",
        "scripts loaded from outside the book",
        "widget or progress-bar elements",
        "a text progress bar",
    )
    for expected in (*expected_problems, "gone.html: HTTP 404", "/srv/builder"):
        assert expected in problems, f"the checks missed {expected!r}: {problems}"
    assert len(squeezed) == 1 and "figures shrunk below 0.43" in squeezed[0], squeezed
    assert "wide.png (700 of 3000 px, 0.23)" in squeezed[0], squeezed  # ...and only the figure too wide
    assert "fits.png" not in squeezed[0], squeezed


def test_mathjax_is_served_with_the_book(built: Path) -> None:
    """MathJax and its licence lie in the built book; no page loads MathJax from another host."""
    mathjax = built / "_static" / "mathjax"
    assert (mathjax / "tex-mml-chtml.js").is_file(), "no _static/mathjax/tex-mml-chtml.js in the book"
    assert "Apache License" in (mathjax / "LICENSE").read_text(), "MathJax's licence is not shipped with it"
    assert (mathjax / "output" / "chtml" / "fonts" / "woff-v2").is_dir(), "MathJax's fonts are missing"
    external = re.compile(r"""src=["'](?:https?:)?//[^"']*mathjax""", re.IGNORECASE)
    pages = sorted(built.rglob("*.html"))
    offenders = [str(page.relative_to(built)) for page in pages if external.search(page.read_text(errors="replace"))]
    assert not offenders, f"pages that load MathJax from a CDN: {offenders}"
    local = [page for page in pages if "_static/mathjax/tex-mml-chtml.js" in page.read_text(errors="replace")]
    assert local, "no page loads the book's own MathJax"


def test_no_page_loads_a_script_from_another_host_or_holds_widgets(built: Path) -> None:
    """No page of the book loads a script from a CDN (require.js, the Jupyter widgets loader, MathJax) or
    stores widget state: a static page has no kernel to drive a widget, and the book must read offline."""
    external = re.compile(r"""<script[^>]*\ssrc=["'](?:https?:)?//""", re.IGNORECASE)
    widget = re.compile(r"application/vnd\.jupyter\.widget-(?:state|view)\+json")
    pages = sorted(built.rglob("*.html"))
    offenders = {
        str(page.relative_to(built)): reasons
        for page in pages
        if (text := page.read_text(errors="replace"))
        and (reasons := [name for name, found in (("CDN script", external), ("widget", widget)) if found.search(text)])
    }
    assert not offenders, f"pages with scripts from another host or widgets: {offenders}"


def test_sidebar_numbers_the_chapters_as_the_intro_does(site: str, browser) -> None:
    """Every "Chapter N" link of the intro points at the page the sidebar numbers N; the building
    blocks, read before Chapter 1, carry no number."""
    facts = open_page(browser, f"{site}book/00_intro.html")
    sidebar = {urldefrag(link["href"])[0]: link["text"] for link in facts["sidebar"]}
    assert facts["chapter_links"], "the intro has no 'Chapter N' link"
    for link in facts["chapter_links"]:
        number = re.match(r"Chapter (\d+)", link["text"]).group(1)
        target = urldefrag(link["href"])[0]
        assert target in sidebar, f"{link['text']!r} links to {target}, which is not in the sidebar"
        assert sidebar[target].startswith(f"{number}. "), f"{link['text']!r}: the sidebar says {sidebar[target]!r}"
    blocks = sidebar.get(f"{site}book/00_building_blocks.html", "")
    assert blocks and not blocks[0].isdigit(), f"the building blocks in the sidebar: {blocks!r}"


def test_citations_read_author_year(site: str, browser) -> None:
    text = open_page(browser, f"{site}book/00_intro.html")["text"]
    for expected in ("(Wu et al., 2025)", "Akyürek et al. (2023)", "Bai et al. (2023)", "(Vinyals et al., 2016)"):
        assert expected in text, f"the intro does not cite as {expected!r}"
    assert "Akyürek et al., 2023" in text, "the bibliography does not label its entries author-year"
