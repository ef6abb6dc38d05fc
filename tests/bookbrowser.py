"""The built book in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by Selenium) loads every page of a built ``_build/html`` from a local HTTP server on 127.0.0.1,
with every other address unreachable, and reports what a reader would meet as ``(page, reason)``.

Checks, per page: no request leaves 127.0.0.1 (map tiles excepted: they cannot load offline and may
fail); no request to the book's own server fails; no JavaScript error in the console (a tile that did
not load excepted); every hvplot/bokeh figure renders (a canvas of non-zero size); every folium map
draws its vector layers; no cell output holds a traceback or an error; the HTML stays under
``MAX_PAGE_BYTES``. For the whole book: every internal link and anchor resolves (:func:`check_links`,
from the files) and the search page finds a word of each chapter's title (:meth:`Browser.search`).
Screenshots go to ``shots`` (one PNG per page).

Used by tests/test_browser.py on the book that tests/test_book.py builds, and on small synthetic pages
that break each check.
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

MAX_PAGE_BYTES = 5_000_000
#: Hosts of map tiles: the only requests allowed to leave 127.0.0.1 (and to fail). folium's default
#: tiles are OpenStreetMap's; add a host here when a map uses another tile provider.
TILE_HOSTS = re.compile(r"(^|\.)(tile\.openstreetmap\.org|basemaps\.cartocdn\.com|arcgisonline\.com|"
                        r"tile\.opentopomap\.org|stamen-tiles\.a\.ssl\.fastly\.net)$")
LOCAL_SCHEMES = ("data", "blob", "about", "chrome-error", "javascript")
RENDER_TIMEOUT_S = 30.0
#: Bokeh roots that Panel's set-up output embeds and that draw nothing (not figures).
INVISIBLE_MODELS = frozenset({"panel.models.browser.BrowserInfo", "panel.models.comm_manager.CommManager",
                              "panel.models.location.Location"})
_ROOT_MODEL = re.compile(r'"roots":\[\{"type":"object","name":"([\w.]+)","id":"([\w-]+)"')


def book_pages(root: Path) -> list[str]:
    """The pages of a built book (relative paths), without the theme's template fragments in ``_static``."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")
                  if not p.relative_to(root).parts[0].startswith("_"))


def figure_roots(page_html: str) -> set[str] | None:
    """Ids of the Bokeh roots that are figures or layouts; None when the page names no root model."""
    roots = {i: name for name, i in _ROOT_MODEL.findall(page_html)}
    return {i for i, name in roots.items() if name not in INVISIBLE_MODELS} if roots else None


def chromium_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) from PATH, or None when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


# -- a local server that remembers what it served ----------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # quiet: the test reports what matters
        pass


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- the browser ------------------------------------------------------------------------------------

# Runs in the page: every canvas, also inside shadow roots (Bokeh 3 renders into them).
_JS_DEEP = """
function deep(node, sel, out) {
  out = out || [];
  node.querySelectorAll(sel).forEach(e => out.push(e));
  node.querySelectorAll('*').forEach(e => { if (e.shadowRoot) deep(e.shadowRoot, sel, out); });
  return out;
}
"""
_JS_STATE = _JS_DEEP + """
const figures = Array.from(document.querySelectorAll('.cell_output [data-root-id]')).map(root => {
  const canvases = deep(root, 'canvas').filter(c => {
    const r = c.getBoundingClientRect();
    return c.width > 0 && c.height > 0 && r.width > 0 && r.height > 0;
  });
  return {id: root.getAttribute('data-root-id'), canvases: canvases.length};
});
const maps = Array.from(document.querySelectorAll('.cell_output iframe')).map((frame, i) => {
  let doc = null;
  try { doc = frame.contentDocument; } catch (e) {}
  if (!doc) return {index: i, leaflet: false, layers: 0, ready: false};
  const leaflet = doc.querySelector('.leaflet-container') !== null;
  const layers = doc.querySelectorAll(
      '.leaflet-overlay-pane path, .leaflet-overlay-pane canvas, .leaflet-marker-pane > *').length;
  return {index: i, leaflet: leaflet, layers: layers, ready: doc.readyState === 'complete',
          srcdoc: frame.hasAttribute('srcdoc')};
});
const outputs = Array.from(document.querySelectorAll('.cell_output'));
const errors = [];
outputs.forEach(o => {
  o.querySelectorAll('.output.traceback, .output.error').forEach(e =>
      errors.push('error output: ' + e.innerText.trim().split('\\n').slice(-1)[0]));
  const text = o.innerText;
  if (text.includes('Traceback (most recent call last)'))
      errors.push('traceback: ' + text.slice(text.indexOf('Traceback'), text.indexOf('Traceback') + 200));
  o.querySelectorAll('.output.stderr').forEach(e => {
    const m = e.innerText.match(/^.*\\b\\w*(Error|Exception)\\b:.*$/m);
    if (m) errors.push('error on stderr: ' + m[0].slice(0, 200));
  });
});
return {ready: document.readyState === 'complete', figures: figures, maps: maps, errors: errors,
        height: Math.max(document.body ? document.body.scrollHeight : 0, document.documentElement.scrollHeight)};
"""


@dataclass
class PageReport:
    page: str
    problems: list[str] = field(default_factory=list)
    html_bytes: int = 0
    transferred_bytes: int = 0
    figures: int = 0
    maps: int = 0
    requests: int = 0


class Browser:
    """One headless Chromium for a series of pages; ``with Browser(shots) as b: b.check(url, page)``."""

    def __init__(self, shots: Path | None = None, width: int = 1280, height: int = 1000,
                 render_timeout_s: float = RENDER_TIMEOUT_S):
        paths = chromium_paths()
        if paths is None:
            raise RuntimeError("chromium and chromedriver are not on PATH (Debian: apt-get install chromium "
                               "chromium-driver)")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = paths[0]
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                    # Nothing but 127.0.0.1: names do not resolve, and any other address goes to a closed proxy
                    # port (loopback bypasses proxies). Chromium's own background traffic is switched off.
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                    "--proxy-server=http://127.0.0.1:9", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                    "--disable-features=Translate,OptimizationHints,MediaRouter", "--hide-scrollbars"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(options=opts, service=Service(executable_path=paths[1]))
        self.driver.set_page_load_timeout(60)
        self.shots = shots
        self.render_timeout_s = render_timeout_s
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.driver.quit()

    def _logs(self) -> tuple[list[dict], list[dict]]:
        perf = [json.loads(e["message"])["message"] for e in self.driver.get_log("performance")]
        return perf, self.driver.get_log("browser")

    def _load(self, url: str) -> None:
        self._logs()  # drop what earlier pages left
        self.driver.get(url)

    def check(self, url: str, page: str, html_file: Path) -> PageReport:
        """Load ``url`` (served from ``html_file``) and report what is wrong with it (``page`` names it)."""
        report = PageReport(page)
        report.html_bytes = html_file.stat().st_size
        if report.html_bytes > MAX_PAGE_BYTES:
            report.problems.append(f"the page is {report.html_bytes / 1e6:.1f} MB, more than "
                                   f"{MAX_PAGE_BYTES / 1e6:.0f} MB")
        figures = figure_roots(html_file.read_text(errors="replace"))
        self._load(url)
        state = self._wait_rendered(figures)
        perf, console = self._logs()
        state["figures"] = [f for f in state["figures"] if figures is None or f["id"] in figures]
        report.figures, report.maps = len(state["figures"]), len(state["maps"])
        for f in state["figures"]:
            if f["canvases"] == 0:
                report.problems.append(f"the hvplot/bokeh figure {f['id']} did not render (no canvas of non-zero size)")
        for m in state["maps"]:
            if not m["leaflet"]:
                report.problems.append(f"map {m['index'] + 1} (an iframe) shows no Leaflet map")
            elif m["layers"] == 0:
                report.problems.append(f"map {m['index'] + 1} draws no vector layer")
        report.problems += state["errors"]
        report.problems += self._network_problems(perf, report)
        report.problems += _console_problems(console)
        if self.shots is not None:
            self._screenshot(self.shots / (page.replace("/", "__").removesuffix(".html") + ".png"), state["height"])
        return report

    def _wait_rendered(self, figures: set[str] | None) -> dict:
        """Poll until the page, its figures and its maps are drawn, or the render timeout passed."""
        deadline = time.monotonic() + self.render_timeout_s
        while True:
            state = self.driver.execute_script(_JS_STATE)
            done = (state["ready"]
                    and all(f["canvases"] > 0 for f in state["figures"] if figures is None or f["id"] in figures)
                    and all(m["ready"] and (not m["leaflet"] or m["layers"] > 0) for m in state["maps"]))
            if done or time.monotonic() > deadline:
                if done:
                    time.sleep(0.5)  # late errors (a failed lazy load) reach the console
                    state = self.driver.execute_script(_JS_STATE)
                return state
            time.sleep(0.25)

    def _network_problems(self, perf: list[dict], report: PageReport) -> list[str]:
        problems = []
        urls: dict[str, str] = {}
        for ev in perf:
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                urls[params["requestId"]] = url
                report.requests += 1
                parts = urlsplit(url)
                if parts.scheme in LOCAL_SCHEMES or parts.hostname == "127.0.0.1":
                    continue
                if not TILE_HOSTS.search(parts.hostname or ""):
                    problems.append(f"requests {url[:200]} (outside 127.0.0.1)")
            elif method == "Network.responseReceived":
                resp = params["response"]
                if resp["status"] >= 400 and _is_local(resp["url"]) and not _is_favicon(resp["url"]):
                    problems.append(f"{resp['url'][:200]} answered {resp['status']}")
            elif method == "Network.loadingFinished":
                report.transferred_bytes += int(params.get("encodedDataLength", 0))
            elif method == "Network.loadingFailed":
                url = urls.get(params["requestId"], "?")
                if _is_local(url) and not params.get("canceled"):
                    problems.append(f"{url[:200]} failed to load: {params.get('errorText')}")
        return problems

    def _screenshot(self, path: Path, height: int) -> None:
        """The whole page (up to 16,000 px tall): the window is made as tall as the page, then restored."""
        size = self.driver.get_window_size()
        self.driver.set_window_size(size["width"], min(int(height) + 100, 16000))
        time.sleep(0.5)  # figures re-layout to the new viewport
        tmp = path.with_suffix(".tmp.png")
        self.driver.save_screenshot(str(tmp))
        tmp.replace(path)
        self.driver.set_window_size(size["width"], size["height"])

    def search(self, base_url: str, word: str, timeout_s: float = 20.0) -> list[str]:
        """The pages (hrefs, without query or fragment) that the book's search page lists for ``word``."""
        from selenium.webdriver.common.by import By

        self._load(f"{base_url}search.html?q={word}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            summary = self.driver.find_elements(By.CSS_SELECTOR, "#search-results .search-summary, "
                                                                 "#search-results p.search-summary")
            if summary and summary[0].text.strip():
                break
            time.sleep(0.25)
        links = self.driver.find_elements(By.CSS_SELECTOR, "#search-results ul.search li a")
        return [urlsplit(a.get_attribute("href")).path.lstrip("/") for a in links]


def _is_local(url: str) -> bool:
    return urlsplit(url).hostname == "127.0.0.1"


def _is_favicon(url: str) -> bool:
    return urlsplit(url).path == "/favicon.ico"  # asked for by the browser, not by the page


def _console_problems(console: list[dict]) -> list[str]:
    """JavaScript errors (SEVERE console entries), less failed map tiles and the browser's own favicon."""
    out = []
    for entry in console:
        if entry.get("level") != "SEVERE":
            continue
        message = entry.get("message", "")
        hosts = {urlsplit(u).hostname or "" for u in re.findall(r"https?://[^\s\"']+", message)}
        if hosts and all(TILE_HOSTS.search(h) for h in hosts):
            continue  # a map tile that cannot load offline
        if "favicon.ico" in message:
            continue
        out.append(f"console error: {message[:300]}")
    return out


# -- links, from the files ------------------------------------------------------------------------------


class _Anchors(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.ids.add(a[key] or "")
        ref = a.get("href") if tag in ("a", "link") else a.get("src") if tag in ("img", "script") else None
        if ref:
            self.links.append(ref)


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> _Anchors:
    p = _Anchors()
    p.feed(path.read_text(errors="replace"))
    return p


def check_links(root: Path) -> list[tuple[str, str]]:
    """Every relative link of every page under ``root`` (hrefs, script and image sources) names a file
    that exists, and its ``#anchor`` an id in that file. Returns ``(page, reason)`` pairs."""
    _parse.cache_clear()
    problems = []
    for rel in book_pages(root):
        page = root / rel
        for ref in _parse(page).links:
            parts = urlsplit(ref)
            if parts.scheme or parts.netloc or ref.startswith(("mailto:", "javascript:")):
                continue
            path, frag = urldefrag(ref)
            path = urlsplit(path).path
            target = page if not path else (page.parent / unquote(path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or not target.resolve().is_relative_to(root.resolve()):
                problems.append((rel, f"links to {ref}, which does not exist"))
                continue
            if frag and target.suffix == ".html" and unquote(frag) not in _parse(target).ids:
                problems.append((rel, f"links to {ref}, whose anchor #{frag} is not in {target.name}"))
    return problems


def chapter_words(root: Path, pages: list[str]) -> dict[str, str]:
    """For each chapter page, the longest word of its title (what a reader would search for)."""
    words = {}
    for page in pages:
        title = re.search(r"<h1[^>]*>(.*?)</h1>", (root / page).read_text(), re.S)
        text = re.sub(r"<[^>]+>", " ", title[1] if title else "")
        candidates = sorted(re.findall(r"[A-Za-z]{4,}", text), key=len, reverse=True)
        if candidates:
            words[page] = candidates[0].lower()
    return words
