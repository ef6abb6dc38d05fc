"""Sphinx extension: the book's pages load no script, stylesheet or font from outside the book.

Executed notebooks point at CDNs: hvplot output carries Panel's loader, which fetches BokehJS from
cdn.bokeh.org and Panel from cdn.holoviz.org; each folium map is an ``<iframe srcdoc>`` that loads
Leaflet, jQuery, Bootstrap, Font Awesome and Leaflet.awesome-markers from jsDelivr, cdnjs and
code.jquery.com. Offline (a hackweek without internet) every chart is an empty gap and every map a
blank frame. As each page is written, this extension rewrites every such URL to one copy of the file
under ``_static/offline/<package>-<version>/`` (relative to the page, so the book works from any
folder or server), taken from:

* the installed ``bokeh`` and ``panel`` wheels, which ship the very files their CDNs serve (the version
  in the URL must be the installed one: the output was made by it);
* the npm packages pinned in ``book/_vendor/package-lock.json`` (Leaflet and the libraries folium loads),
  installed into ``book/_vendor/node_modules`` by ``make env`` (``npm ci``).

A stylesheet's own ``url(...)`` files (fonts, images) are copied beside it. The one file no registry
package ships, folium's ``leaflet.awesome.rotate.min.css`` (only used by ``folium.Icon(angle=...)``,
which the book does not use), becomes an empty ``data:`` stylesheet. A URL of a CDN that maps to no
file, or any other external ``<script src>``/stylesheet, is a build warning (an error under ``-W``,
as ``make book`` and the tests build), naming the page and the URL. Map tiles are not touched: they
are images a map fetches at run time, and a map without them still draws its layers.

It also drops repeated ``<script>`` entries from each page (see :func:`_dedupe_scripts`).
tests/test_browser.py checks the built pages in Chromium with every address but 127.0.0.1 blocked.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from importlib.util import find_spec
from pathlib import Path, PurePosixPath
from typing import Any

VENDOR = Path(__file__).resolve().parents[1] / "_vendor"
STATIC = "_static/offline"
EMPTY_CSS = "data:text/css,"
#: Hosts whose URLs must all be mapped; a URL of one of them left in a page is an error.
CDN_HOSTS = ("cdn.bokeh.org", "cdn.holoviz.org", "cdn.jsdelivr.net", "cdnjs.cloudflare.com", "code.jquery.com",
             "netdna.bootstrapcdn.com", "unpkg.com", "maxcdn.bootstrapcdn.com", "stackpath.bootstrapcdn.com")
#: Panel loads files below its dist folder at run time (``__panel_cdn_dist__``): its stylesheets.
PANEL_RUNTIME = ("css",)


class OfflineAssetError(RuntimeError):
    """An external asset has no local copy (unknown URL, other version, npm packages not installed)."""


@dataclass(frozen=True)
class Asset:
    """One file (or folder, for a base URL) of a package: ``root / path``, published under ``label``."""

    label: str
    root: Path
    path: str

    @property
    def source(self) -> Path:
        return self.root / self.path


# -- where the files come from ------------------------------------------------------------------


def _python_package(name: str, sub: str) -> tuple[Path, str]:
    spec = find_spec(name)
    if spec is None or spec.origin is None:
        raise OfflineAssetError(f"the {name} package is not installed")
    return Path(spec.origin).parent / sub, dist_version(name)


def _npm_package(name: str) -> tuple[Path, str]:
    """Folder and version of an npm package installed from book/_vendor's lock file."""
    lock = json.loads((VENDOR / "package-lock.json").read_text())
    pinned = lock["packages"].get(f"node_modules/{name}", {}).get("version")
    if pinned is None:
        raise OfflineAssetError(f"npm package {name} is not pinned in {VENDOR / 'package-lock.json'}")
    folder = VENDOR / "node_modules" / name
    manifest = folder / "package.json"
    installed = json.loads(manifest.read_text())["version"] if manifest.exists() else None
    if installed != pinned:
        raise OfflineAssetError(f"npm package {name}@{pinned} is not installed in {VENDOR / 'node_modules'} "
                                f"(found {installed}): run `make env` (it runs `npm ci` there; needs npm)")
    return folder, pinned


def _same_version(url: str, wanted: str, have: str, package: str) -> None:
    if wanted != have:
        raise OfflineAssetError(f"{url} asks for {package} {wanted}, but {package} {have} is installed: "
                                f"rebuild the book (its outputs were made by another {package})")


def _bokeh(m: re.Match[str]) -> Asset:
    root, have = _python_package("bokeh", "server/static/js")
    _same_version(m[0], m["version"], have, "bokeh")
    return Asset(f"bokeh-{have}", root, f"{m['name']}{m['min'] or ''}.js")


def _panel(m: re.Match[str]) -> Asset:
    root, have = _python_package("panel", "dist")
    _same_version(m[0], m["version"], have, "panel")
    return Asset(f"panel-{have}", root, m["path"])


def _npm(m: re.Match[str]) -> Asset:
    root, have = _npm_package(m["name"])
    _same_version(m[0], m["version"], have, m["name"])
    return Asset(f"{m['name'].replace('/', '-')}-{have}", root, m["path"])


def _npm_file(name: str, path: Callable[[re.Match[str]], str], *,
              same_version: bool = True) -> Callable[[re.Match[str]], Asset]:
    """A resolver for a CDN that serves npm package ``name`` under other paths (``path`` maps them)."""
    def resolve(m: re.Match[str]) -> Asset:
        root, have = _npm_package(name)
        if same_version:
            _same_version(m[0], m["version"], have, name)
        return Asset(f"{name}-{have}", root, path(m))
    return resolve


_URL_END = r"""[^\s"'<>)\\&?#]"""  # a URL inside HTML, JS strings or escaped srcdoc ends at these
#: cdnjs library names -> the npm packages holding the same files (the cdnjs path, at the package's root).
CDNJS = {"d3": "d3"}
#: (pattern, resolver): a resolver returns the Asset for a URL, or a replacement string. A URL's query
#: (``?v=1.10.0``) is dropped: each copy's folder already names its version.
RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Asset | str]]] = [
    (re.compile(r"https://cdn\.bokeh\.org/bokeh/(?:release|dev)/(?P<name>bokeh(?:-[a-z]+)?)-"
                r"(?P<version>\d[\w.+-]*?)(?P<min>\.min)?\.js"), _bokeh),
    (re.compile(rf"https://cdn\.holoviz\.org/panel/(?P<version>[^/]+)/dist/(?P<path>{_URL_END}*)"), _panel),
    (re.compile(rf"https://cdn\.jsdelivr\.net/npm/@holoviz/panel@(?P<version>[^/]+)/dist/(?P<path>{_URL_END}*)"),
     _panel),
    (re.compile(r"https://cdn\.jsdelivr\.net/gh/python-visualization/folium/folium/templates/"
                r"leaflet\.awesome\.rotate\.min\.css"), lambda m: EMPTY_CSS),
    (re.compile(rf"https://cdn\.jsdelivr\.net/npm/(?P<name>(?:@[\w.-]+/)?[\w.-]+)@(?P<version>[\w.-]+)/"
                rf"(?P<path>{_URL_END}+)"), _npm),
    (re.compile(r"https://code\.jquery\.com/jquery-(?P<version>\d[\d.]*\d)(?P<min>\.min)?\.js"),
     _npm_file("jquery", lambda m: f"dist/jquery{m['min'] or ''}.js")),
    (re.compile(r"https://cdnjs\.cloudflare\.com/ajax/libs/Leaflet\.awesome-markers/(?P<version>[\d.]+)/"
                r"leaflet\.awesome-markers(?P<min>\.min)?\.(?P<ext>js|css)"),
     _npm_file("drmonty-leaflet-awesome-markers",
               lambda m: f"{m['ext']}/leaflet.awesome-markers{m['min'] if m['ext'] == 'js' and m['min'] else ''}"
                         f".{m['ext']}")),
    *((re.compile(rf"https://cdnjs\.cloudflare\.com/ajax/libs/{re.escape(lib)}/(?P<version>[\w.-]+)/"
                  rf"(?P<path>{_URL_END}+)"), _npm_file(pkg, lambda m: m["path"])) for lib, pkg in CDNJS.items()),
    # Bootstrap 3.0.0's separate Glyphicons sheet: the same glyph font and classes, from Bootstrap 3.
    (re.compile(r"https://netdna\.bootstrapcdn\.com/bootstrap/3\.0\.0/css/bootstrap-glyphicons\.css"),
     _npm_file("glyphicons-only-bootstrap", lambda m: "css/bootstrap.min.css", same_version=False)),
]
_QUERY = r"(?:\?[\w.=-]*)?"
_ANY_CDN = re.compile(rf"https?://(?:{'|'.join(re.escape(h) for h in CDN_HOSTS)})/{_URL_END}*{_QUERY}")
#: External scripts and stylesheets in a page, also inside an escaped ``srcdoc`` (checked after rewriting).
_EXTERNAL_LOAD = re.compile(
    r"""<(?:script[^>]*\ssrc|link[^>]*\shref)\s*=\s*["']?(https?:)?//[^"'\s>]+|@import\s+(?:url\()?["']?https?://""",
    re.IGNORECASE)


def resolve(url: str) -> Asset | str:
    """The Asset (or replacement text) for a CDN URL; OfflineAssetError if it has none."""
    for pattern, resolver in RULES:
        m = pattern.fullmatch(url.split("?")[0])
        if m:
            return resolver(m)
    raise OfflineAssetError(f"no local copy is known for {url}: add a rule to {Path(__file__).name}")


# -- copying ----------------------------------------------------------------------------------------

_CSS_URL = re.compile(r"""url\(\s*(["']?)([^"')]+)\1\s*\)""")


def copy_asset(asset: Asset, static_dir: Path) -> None:
    """Copy ``asset`` to ``static_dir/label/path`` (a folder: its PANEL_RUNTIME subfolders), with the files
    a stylesheet refers to. Copies each file once; a missing file is an OfflineAssetError."""
    if asset.path in ("", "/") or asset.path.endswith("/"):
        for sub in PANEL_RUNTIME:
            for f in sorted((asset.source / sub).rglob("*")):
                if f.is_file():
                    copy_asset(Asset(asset.label, asset.root, f.relative_to(asset.root).as_posix()), static_dir)
        return
    src = asset.source
    dest = static_dir / asset.label / asset.path
    if dest.exists():
        return
    if not src.is_file():
        raise OfflineAssetError(f"{src} does not exist (wanted as {asset.label}/{asset.path})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    if src.suffix == ".css":
        for _, ref in _CSS_URL.findall(src.read_text(errors="replace")):
            ref = ref.split("#")[0].split("?")[0]
            if not ref or ref.startswith(("data:", "http:", "https:", "//", "/")):
                continue
            target = PurePosixPath(asset.path).parent / ref
            parts: list[str] = []
            for p in target.parts:
                if p == "..":
                    if not parts:
                        raise OfflineAssetError(f"{src} refers to {ref}, outside its package")
                    parts.pop()
                elif p != ".":
                    parts.append(p)
            copy_asset(Asset(asset.label, asset.root, "/".join(parts)), static_dir)


# -- rewriting pages --------------------------------------------------------------------------------


def rewrite(text: str, to_static: str, static_dir: Path | None) -> tuple[str, list[str]]:
    """Rewrite every CDN URL in ``text`` (HTML of one page) to ``to_static/label/path`` and copy its file
    into ``static_dir`` (not when None). Returns the new text and the problems found (one line each)."""
    problems: list[str] = []

    def sub(m: re.Match[str]) -> str:
        url = m[0]
        try:
            found = resolve(url)
            if isinstance(found, str):
                return found
            if static_dir is not None:
                copy_asset(found, static_dir)
        except OfflineAssetError as exc:
            problems.append(str(exc))
            return url
        return f"{to_static}/{found.label}/{found.path}"

    text = _ANY_CDN.sub(sub, text)
    for m in _EXTERNAL_LOAD.finditer(html.unescape(text)):
        problems.append(f"loads an external file: {m[0][:200]}")
    return text, problems


def _dedupe_scripts(context: dict[str, Any]) -> None:
    """Drop repeated ``<script>`` entries. Scripts that extensions add once the builder exists reach
    Sphinx 7.4's page context twice (sphinx-thebe's ``const THEBE_JS_URL = ...`` among them: declared
    twice, a SyntaxError on every page); the list is the page's own copy, restored after each page."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[str, ...]] = set()
    unique = []
    for js in scripts:
        name = getattr(js, "filename", js) or ""  # an inline script's is None or "", depending on the caller
        key = (str(name), *sorted(f"{k}={v}" for k, v in getattr(js, "attributes", {}).items()))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def _on_page(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    from sphinx.util import logging

    _dedupe_scripts(context)
    if "body" not in context:
        return
    to_static = context["pathto"](STATIC, 1)
    static_dir = Path(app.outdir) / STATIC
    context["body"], problems = rewrite(context["body"], to_static, static_dir)
    for asset in [*context.get("script_files", []), *context.get("css_files", [])]:  # the page's <head>
        name = str(getattr(asset, "filename", asset) or "")
        if re.match(r"(https?:)?//", name):
            problems.append(f"loads an external file: {name} (added by an extension or the theme)")
    for p in dict.fromkeys(problems):
        logging.getLogger(__name__).warning(f"{pagename}: not offline: {p}")


def _check_vendor(app: Any) -> None:
    """Fail early, with the fix, when the pinned npm packages are not installed."""
    lock = json.loads((VENDOR / "package-lock.json").read_text())
    for key in lock["packages"]:
        if key.startswith("node_modules/") and not lock["packages"][key].get("peer"):
            _npm_package(key.removeprefix("node_modules/"))


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _check_vendor)
    app.connect("html-page-context", _on_page)
    return {"parallel_read_safe": True, "parallel_write_safe": False}
