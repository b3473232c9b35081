"""Check the built website as a reader's browser shows it: headless Chromium loads every page from a
local HTTP server and reports what a person would notice.

    python website/check.py [SITE] [--screenshots DIR]     (SITE: build/site by default)

For every page: each image loaded, is not blank and has alternative text (not a file name); every
formula was typeset by MathJax; no request left the site (everything is served with it) and none
failed; no JavaScript error. Every link to the site itself resolves, its #anchor included, and the
search page finds the notebooks. Exit status 0 when nothing is wrong, 1 with a list of problems, 2
when there is no site or no Chromium. Chromium is Debian's `chromium` package (apt-get install
chromium); it is driven over the DevTools protocol with websocket-client, so no driver is needed.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# The front page from the top, and notebook 01 at its first figure, at the size of a laptop screen.
SCREENSHOTS = {"index.html": "site_front.png", "notebooks/01_saliency.html": "site_01.png"}
FIRST_FIGURE = ("const figure = document.querySelector('.cell_output img');"
                "if (figure) { figure.scrollIntoView({block: 'start'}); window.scrollBy(0, -120); }")
VIEWPORT = (1280, 900)

# Run in the page once it has loaded and MathJax has typeset: what a reader sees, as plain data.
# An image counts as blank when all its pixels are alike (a figure that drew nothing).
SURVEY = """(async () => {
  await Promise.all([...document.images].map(i => i.complete ? null :
                     new Promise(r => { i.onload = i.onerror = r; })));
  const canvas = document.createElement('canvas'), context = canvas.getContext('2d', {willReadFrequently: true});
  const images = [...document.images].map(i => {
    let distinct = 0;
    if (i.naturalWidth > 0) {
      canvas.width = Math.min(i.naturalWidth, 400); canvas.height = Math.min(i.naturalHeight, 400);
      context.drawImage(i, 0, 0, canvas.width, canvas.height);
      const data = context.getImageData(0, 0, canvas.width, canvas.height).data, seen = new Set();
      for (let k = 0; k < data.length && seen.size < 3; k += 4 * 97) seen.add(data.slice(k, k + 4).join());
      distinct = seen.size;
    }
    return {src: i.currentSrc || i.src, alt: i.getAttribute('alt'), width: i.naturalWidth,
            height: i.naturalHeight, distinct: distinct};
  });
  const math = [...document.querySelectorAll('.math')];
  return {title: document.title, images: images, math: math.length,
          typeset: math.filter(m => m.querySelector('mjx-container')).length,
          links: [...document.querySelectorAll('a[href]')].map(a => a.href),
          search_results: [...document.querySelectorAll('#search-results li a')].map(a => a.href)};
})()"""


def find_chromium() -> str | None:
    """The path of a Chromium-like browser on PATH, or None."""
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@dataclass
class Page:
    """What one page showed. `problems` lists what a reader would notice, each a full sentence."""
    path: str
    title: str = ""
    figures: int = 0
    formulas: int = 0
    links: list = field(default_factory=list)
    search_results: list = field(default_factory=list)
    problems: list = field(default_factory=list)


class DevTools:
    """A minimal Chrome DevTools protocol client for one page target (commands and their events)."""

    def __init__(self, url: str, timeout: float):
        import websocket

        self.socket = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.last_id, self.events = 0, []

    def send(self, method: str, **params):
        self.last_id += 1
        self.socket.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout:.0f} s")
            self.events.append(json.loads(self.socket.recv()))

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self):
        self.socket.close()


class Browser:
    """Headless Chromium with remote debugging on a free port, one page open; a context manager."""

    def __init__(self, executable: str, timeout: float = 60):
        self.profile = tempfile.TemporaryDirectory(prefix="dlmie-chromium-", ignore_cleanup_errors=True)
        self.process = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
             "--disable-background-networking", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile.name}", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port = self._port(timeout)
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout).read())
            page = next(t for t in targets if t["type"] == "page")
            self.tools = DevTools(page["webSocketDebuggerUrl"], timeout)
            for domain in ("Page", "Runtime", "Network", "Log"):
                self.tools.send(f"{domain}.enable")
            self.tools.send("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
                            deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def _port(self, timeout: float) -> int:
        """Chromium writes its DevTools port into the profile once it listens."""
        marker, deadline = Path(self.profile.name) / "DevToolsActivePort", time.monotonic() + timeout
        while not (marker.exists() and marker.read_text().strip()):
            if self.process.poll() is not None:
                raise RuntimeError(f"Chromium exited with status {self.process.returncode} before listening")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Chromium did not open its DevTools port within {timeout:.0f} s")
            time.sleep(0.1)
        return int(marker.read_text().split()[0])

    def close(self):
        if getattr(self, "tools", None):
            self.tools.close()
        # Chromium's helper processes (renderer, crash handler) outlive the browser process for a
        # moment and keep writing into the profile: end the whole process group, then remove it.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        for _ in range(50):
            shutil.rmtree(self.profile.name, ignore_errors=True)
            if not Path(self.profile.name).exists():
                break
            time.sleep(0.1)
        self.profile.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def visit(tools: DevTools, url: str, origin: str, timeout: float = 60) -> tuple[dict, list[str]]:
    """Load url and survey it. Returns the survey (see SURVEY) and the problems seen while loading."""
    tools.events.clear()
    tools.send("Page.navigate", url=url)
    tools.wait_for("Page.loadEventFired", timeout)
    tools.evaluate("window.MathJax && MathJax.startup && MathJax.startup.promise ? "
                   "MathJax.startup.promise.then(() => true) : true")
    if "search.html" in url:  # the results arrive after the search index script has loaded
        tools.evaluate("new Promise(r => { const t0 = Date.now(); (function poll() {"
                       " const results = document.querySelector('#search-results');"
                       " if (!results || results.querySelector('.search-summary') || Date.now() - t0 > 15000) r(true);"
                       " else setTimeout(poll, 100); })(); })")
    survey = tools.evaluate(SURVEY)
    problems, urls = [], {}
    for event in tools.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        resource = (urls.get(params.get("requestId")) or params.get("response", {}).get("url")
                    or params.get("entry", {}).get("url", ""))
        if resource.endswith("/favicon.ico"):
            continue  # the browser asks every host for one, not the page; the site has none
        if method == "Network.requestWillBeSent" and not resource.startswith((origin, "data:", "blob:", "about:")):
            problems.append(f"requested {resource} from outside the site")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            problems.append(f"{resource} answered HTTP {params['response']['status']}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            problems.append(f"{resource or 'a resource'} failed to load: {params['errorText']}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            problems.append(f"JavaScript error: {details.get('exception', {}).get('description', details['text'])}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            problems.append(f"console error: {params['entry']['text']}")
    return survey, problems


def survey_problems(survey: dict) -> list[str]:
    """What is wrong with a page's images and formulas."""
    problems = []
    for image in survey["images"]:
        name = image["src"].rsplit("/", 1)[-1]
        alt = (image["alt"] or "").strip()
        if image["width"] == 0:
            problems.append(f"image {name} did not load")
        elif image["distinct"] < 2:
            problems.append(f"image {name} is blank (one colour)")
        if not alt or re.search(r"\.(png|jpe?g|gif|svg)$", alt, re.I):
            problems.append(f"image {name} has no alternative text (alt={image['alt']!r})")
    if survey["typeset"] < survey["math"]:
        problems.append(f"{survey['math'] - survey['typeset']} of {survey['math']} formulas were not typeset by MathJax")
    return problems


def serve(site: Path):
    """An HTTP server for site on a free port of 127.0.0.1, in a daemon thread. Returns (server, origin)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def broken_links(pages: dict, origin: str) -> list[str]:
    """Links to the site that do not resolve: the page is missing, or it has no element with the #anchor."""
    problems, texts = [], {}
    for page in pages.values():
        for link in sorted(set(page.links)):
            if not link.startswith(origin):
                continue
            url, _, anchor = link.partition("#")
            if url not in texts:
                try:
                    texts[url] = urllib.request.urlopen(url, timeout=30).read().decode("utf-8", "replace")
                except urllib.error.HTTPError as error:
                    texts[url] = None
                    problems.append(f"{page.path}: link to {url[len(origin):]} answers HTTP {error.code}")
            anchor = urllib.parse.unquote(anchor)
            if anchor and texts[url] is not None and not re.search(rf'\bid="{re.escape(anchor)}"', texts[url]):
                problems.append(f"{page.path}: link to {link[len(origin):]}: no element with id {anchor!r}")
    return problems


def check_site(site: Path, screenshots: Path | None = None, executable: str | None = None,
               query: str = "saliency") -> tuple[dict, list[str]]:
    """Load every page of a built site in headless Chromium.

    Inputs:
    - site: the folder with index.html (build/site)
    - screenshots: a folder for the PNG screenshots named in SCREENSHOTS, or None
    - executable: the browser (default: find_chromium())
    - query: a word the search page must find
    Returns ({page path: Page}, problems), the problems of all pages, each naming its page.
    """
    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError(f"no Chromium on PATH (looked for {', '.join(BROWSERS)}): apt-get install chromium")
    paths = sorted(str(p.relative_to(site)) for p in site.rglob("*.html")
                   if not p.relative_to(site).parts[0].startswith("_"))
    server, origin = serve(site)
    pages = {}
    try:
        with Browser(executable) as browser:
            for path in paths + [f"search.html?q={query}"]:
                survey, problems = visit(browser.tools, origin + path, origin)
                page = pages[path] = Page(path, survey["title"], len(survey["images"]), survey["typeset"],
                                          survey["links"], survey["search_results"])
                page.problems = [f"{path}: {p}" for p in problems + survey_problems(survey)]
                if screenshots is not None and path in SCREENSHOTS:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    if path.startswith("notebooks/"):
                        browser.tools.evaluate(FIRST_FIGURE)
                    png = base64.b64decode(browser.tools.send("Page.captureScreenshot", format="png")["data"])
                    (screenshots / SCREENSHOTS[path]).write_bytes(png)
        problems = [p for page in pages.values() for p in page.problems] + broken_links(pages, origin)
    finally:
        server.shutdown()
        server.server_close()
    search = pages[f"search.html?q={query}"]
    if not search.search_results:
        problems.append(f"search.html: searching for {query!r} found nothing")
    return pages, problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, nargs="?", default=ROOT / "build" / "site")
    parser.add_argument("--screenshots", type=Path, help="write site_front.png and site_01.png here")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"error: no {args.site / 'index.html'}: build the site first (make site)", file=sys.stderr)
        return 2
    try:
        pages, problems = check_site(args.site, args.screenshots)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for page in pages.values():
        print(f"{page.path}: {page.title!r}, {page.figures} images, {page.formulas} formulas, {len(page.links)} links")
    for problem in problems:
        print("PROBLEM", problem)
    print(f"{len(pages)} pages, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
