"""The rendered book in headless Chromium, offline (issue 16, part 1), and each of the browser checks
failing on a small page that breaks it. Screenshots of the book's pages go to results/browser/."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

import bookbrowser as bb

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "results" / "browser"
sys.path.insert(0, str(REPO / "book" / "_ext"))
import offline_assets  # noqa: E402

needs_chromium = pytest.mark.skipif(
    bb.chromium_paths() is None,
    reason="headless Chromium is not installed (Debian: apt-get install chromium chromium-driver; .ci/run does)")


@pytest.mark.notebook
@needs_chromium
def test_the_book_works_offline_in_a_browser(built_book):
    built_book.require()
    root = built_book.html
    pages = bb.book_pages(root)
    chapters = [p for p in pages if p.startswith(("book/", "notebooks/"))]
    assert len(chapters) >= 6, pages
    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    failures = [f"{page}: {reason}" for page, reason in bb.check_links(root)]
    summary = {}
    with bb.serve(root) as base, bb.Browser(SHOTS) as browser:
        for page in pages:
            report = browser.check(base + page, page, root / page)
            failures += [f"{page}: {p}" for p in dict.fromkeys(report.problems)]
            summary[page] = {"html_bytes": report.html_bytes, "transferred_bytes": report.transferred_bytes,
                             "requests": report.requests, "figures": report.figures, "maps": report.maps}
        for page, word in bb.chapter_words(root, chapters).items():
            found = browser.search(base, word)
            if page not in found:
                failures.append(f"search.html: searching {word!r} (from the title of {page}) lists {found}")
        assert browser.search(base, "qzxwvjkq") == [], "the search check cannot fail: a made-up word was found"
    (SHOTS / "pages.json").write_text(json.dumps(summary, indent=1))
    assert sum(s["figures"] for s in summary.values()) >= 3 and sum(s["maps"] for s in summary.values()) >= 3, \
        f"the book's figures and maps were not found: {summary}"
    assert not failures, "the book in a browser:\n" + "\n".join(failures)


# -- every check fails on a page that breaks it -------------------------------------------------------


def _cell(inner: str) -> str:
    return f'<div class="cell_output docutils container">{inner}</div>'


def _folium_map(static: Path, layers: bool) -> str:
    """A folium map as a notebook shows it (an iframe srcdoc), its CDN URLs rewritten to the book's copies."""
    import folium

    fmap = folium.Map(location=[62.6, -45.0], zoom_start=8)
    if layers:
        folium.PolyLine([(62.5, -45.3), (62.7, -44.7)], color="red").add_to(fmap)
    text, problems = offline_assets.rewrite(fmap._repr_html_(), "_static/offline", static)
    assert not problems, problems
    return text


def _bokeh_figure(root: Path) -> str:
    from bokeh.embed import components
    from bokeh.plotting import figure

    js = Path(offline_assets._python_package("bokeh", "server/static/js")[0]) / "bokeh.min.js"
    shutil.copyfile(js, root / "bokeh.min.js")
    p = figure(width=300, height=200)
    p.line([1, 2, 3], [1, 3, 2])
    script, div = components(p)
    return f'<script src="bokeh.min.js"></script>{_cell(div)}{script}'


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small site: one good page, and one page per way of breaking a check."""
    root = tmp_path_factory.mktemp("site")
    static = root / "_static" / "offline"
    page = "<!DOCTYPE html><html><head><meta charset='utf-8'><title>t</title></head><body>{}</body></html>"
    pages = {
        "good.html": _bokeh_figure(root) + _cell(_folium_map(static, layers=True))
                     + '<h2 id="here">here</h2><a href="#here">x</a><a href="external.html">y</a>',
        "external.html": '<script src="https://cdn.example.org/lib.js"></script>',
        "console.html": '<script>throw new Error("broken on purpose")</script>',
        "missing_file.html": '<img src="nothere.png">',
        "figure.html": _cell('<div data-root-id="f00d" style="display: contents;"></div>'),
        "map.html": _cell(_folium_map(static, layers=False)),
        "map_offline.html": _cell(_folium_map(static, layers=True).replace("_static/offline", "https://cdn.example.org")),
        "traceback.html": _cell('<div class="output traceback"><pre>Traceback (most recent call last):\n'
                                '  File "x", line 1\nValueError: broken on purpose</pre></div>'),
        "stderr.html": _cell('<div class="output stderr"><pre>botocore.exceptions.ClientError: Access Denied</pre></div>'),
        "links.html": '<a href="nowhere.html">a</a> <a href="good.html#nowhere">b</a>',
        "big.html": "<p>" + "x" * (bb.MAX_PAGE_BYTES + 10) + "</p>",
    }
    for name, body in pages.items():
        (root / name).write_text(page.format(body))
    return root


EXPECTED = {
    "external.html": "requests https://cdn.example.org/lib.js (outside 127.0.0.1)",
    "console.html": "broken on purpose",
    "missing_file.html": "nothere.png answered 404",
    "figure.html": "figure f00d did not render",
    "map.html": "map 1 draws no vector layer",
    "map_offline.html": "map 1 (an iframe) shows no Leaflet map",
    "traceback.html": "traceback: Traceback (most recent call last)",
    "stderr.html": "error on stderr: botocore.exceptions.ClientError: Access Denied",
    "big.html": "more than 5 MB",
}


@needs_chromium
def test_each_check_fails_on_a_page_that_breaks_it(synthetic):
    with bb.serve(synthetic) as base, bb.Browser(synthetic / "shots", render_timeout_s=5) as browser:
        reports = {name: browser.check(base + name, name, synthetic / name) for name in [*EXPECTED, "good.html"]}
    good = reports.pop("good.html")
    assert not good.problems and good.figures == 1 and good.maps == 1, good
    assert good.requests > 0 and (synthetic / "shots" / "good.png").stat().st_size > 10_000
    for name, needle in EXPECTED.items():
        assert any(needle in p for p in reports[name].problems), (name, reports[name].problems)
    assert any("console error" in p for p in reports["external.html"].problems)  # and it failed to load


def test_link_check_names_missing_pages_and_anchors(synthetic):
    problems = [p for p in bb.check_links(synthetic) if p[0] == "links.html"]
    assert problems == [("links.html", "links to nowhere.html, which does not exist"),
                        ("links.html", "links to good.html#nowhere, whose anchor #nowhere is not in good.html")]
    assert not [p for p in bb.check_links(synthetic) if p[0] == "good.html"]


def test_figure_roots_skip_panels_invisible_models():
    page = ('"roots":[{"type":"object","name":"panel.models.browser.BrowserInfo","id":"a-1"}] '
            '"roots":[{"type":"object","name":"Row","id":"b-2","attributes":{}}]')
    assert bb.figure_roots(page) == {"b-2"}
    assert bb.figure_roots("<p>no bokeh</p>") is None


def test_chapter_words_come_from_titles(tmp_path):
    (tmp_path / "a.html").write_text("<h1>Temporary S3 credentials<a class='headerlink' href='#x'>#</a></h1>")
    assert bb.chapter_words(tmp_path, ["a.html"]) == {"a.html": "credentials"}
