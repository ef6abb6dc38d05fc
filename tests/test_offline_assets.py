"""book/_ext/offline_assets.py: every CDN URL that hvplot and folium put in a page becomes one local copy
of the file from the installed wheel or the pinned npm package; anything it cannot map is reported."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "book" / "_ext"))
import offline_assets as oa  # noqa: E402


def _local_refs(text: str) -> list[str]:
    return re.findall(r"_static/offline/[^\s\"'<>)&?]+", text)


def test_a_folium_map_loads_only_the_books_copies(tmp_path):
    import folium

    fmap = folium.Map(location=[62.6, -45.0], zoom_start=6)
    folium.PolyLine([(62.5, -45.3), (62.7, -44.7)]).add_to(fmap)
    page = fmap._repr_html_()
    assert "cdn.jsdelivr.net/npm/leaflet@" in page  # what folium writes
    text, problems = oa.rewrite(page, "../_static/offline", tmp_path / "_static" / "offline")
    assert problems == []
    assert not re.search(r"https?://(?!tile\.openstreetmap\.org|www\.openstreetmap\.org|leafletjs\.com|"
                         r"carto\.com|github\.com)", text), "an external URL is left"
    refs = _local_refs(text)
    assert any(r.endswith("/leaflet.js") for r in refs) and any(r.endswith("/leaflet.css") for r in refs)
    for ref in refs:
        assert (tmp_path / ref).is_file(), ref
    # the stylesheets' own files came along: Font Awesome's fonts, Leaflet's images
    assert list((tmp_path / "_static/offline").glob("@fortawesome-fontawesome-free-*/webfonts/*.woff2"))
    assert list((tmp_path / "_static/offline").glob("leaflet-*/dist/images/layers.png"))


def test_hvplots_loader_points_at_the_wheels_files(tmp_path):
    from importlib.metadata import version

    bokeh, panel = version("bokeh"), version("panel")
    loader = (f'const js_urls = ["https://cdn.bokeh.org/bokeh/release/bokeh-{bokeh}.min.js", '
              f'"https://cdn.bokeh.org/bokeh/release/bokeh-widgets-{bokeh}.min.js", '
              f'"https://cdn.holoviz.org/panel/{panel}/dist/panel.min.js"]; '
              f'const CDN_DIST = "https://cdn.holoviz.org/panel/{panel}/dist/"; '
              f'"stylesheets":["https://cdn.holoviz.org/panel/{panel}/dist/css/loading.css?v={panel}"]')
    text, problems = oa.rewrite(loader, "_static/offline", tmp_path)
    assert problems == [] and "https://" not in text
    assert f'"_static/offline/bokeh-{bokeh}/bokeh.min.js"' in text
    assert f'CDN_DIST = "_static/offline/panel-{panel}/"' in text
    assert (tmp_path / f"bokeh-{bokeh}" / "bokeh-widgets.min.js").is_file()
    assert (tmp_path / f"panel-{panel}" / "panel.min.js").is_file()
    assert (tmp_path / f"panel-{panel}" / "css" / "loading.css").is_file()  # Panel's run-time stylesheets


@pytest.mark.parametrize("url, needle", [
    ("https://cdn.bokeh.org/bokeh/release/bokeh-2.4.3.min.js", "asks for bokeh 2.4.3"),
    ("https://cdn.jsdelivr.net/npm/leaflet@1.7.1/dist/leaflet.js", "asks for leaflet 1.7.1"),
    ("https://cdn.jsdelivr.net/npm/left-pad@1.3.0/index.js", "left-pad is not pinned"),
    ("https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/MathJax.js", "no local copy is known"),
    ("https://cdn.holoviz.org/panel/1.10.0/dist/nothing-here.js", "does not exist"),
])
def test_what_cannot_be_served_locally_is_reported(tmp_path, url, needle):
    _, problems = oa.rewrite(f'<script src="{url}"></script>', "_static/offline", tmp_path)
    assert any(needle in p for p in problems), problems
    assert any(p.startswith("loads an external file") for p in problems)  # and the page still loads it


def test_any_external_script_or_stylesheet_is_reported(tmp_path):
    page = ('<link rel="stylesheet" href="https://fonts.example.org/a.css">'
            '<iframe srcdoc="&lt;script src=&quot;https://example.org/x.js&quot;&gt;&lt;/script&gt;"></iframe>'
            '<a href="https://example.org/">a link is fine</a><img src="https://tile.openstreetmap.org/1/0/0.png">')
    _, problems = oa.rewrite(page, "_static/offline", tmp_path)
    assert len(problems) == 2 and all(p.startswith("loads an external file") for p in problems), problems


def test_the_pinned_npm_packages_are_installed():
    oa._check_vendor(None)  # raises, saying to run `make env`, when book/_vendor/node_modules is stale


def test_an_inline_script_added_twice_is_written_once():
    from sphinx.builders.html._assets import _JavaScript

    scripts = [_JavaScript(None, body="const A = 1"), _JavaScript("x.js"), _JavaScript("", body="const A = 1"),
               _JavaScript("x.js"), _JavaScript("", body="const B = 2")]
    context = {"script_files": scripts}
    oa._dedupe_scripts(context)
    assert [(js.filename, js.attributes.get("body")) for js in scripts] == [
        (None, "const A = 1"), ("x.js", None), ("", "const B = 2")]


def test_a_page_that_loads_an_external_script_fails_the_build(tmp_path):
    """The whole path through Sphinx: the warning names the page and the URL, and -W fails the build."""
    import subprocess

    import yaml

    cfg = yaml.safe_load((REPO / "_config.yml").read_text())
    cfg.pop("bibtex_bibfiles", None)
    cfg["sphinx"]["local_extensions"] = {"offline_assets": str(REPO / "book" / "_ext")}
    cfg["sphinx"]["config"]["html_js_files"] = ["https://cdn.example.org/head.js"]
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (tmp_path / "intro.md").write_text(
        "# Intro\n\n<script src=\"https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/MathJax.js\"></script>\n")
    jb = Path(sys.executable).with_name("jupyter-book")
    r = subprocess.run([str(jb), "build", str(tmp_path), "--all", "-W", "--keep-going"], capture_output=True,
                       text=True)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "intro: not offline: no local copy is known for https://cdnjs.cloudflare.com/ajax/libs/mathjax" in out
    assert "intro: not offline: loads an external file: https://cdn.example.org/head.js" in out
