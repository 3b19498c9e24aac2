"""Check that no code block or table of the built HTML docs is cut off, in headless Chromium.

    python docs/check_layout.py BUILT_HTML_DIR [--width 1280] [--screenshots DIR]

Each page is loaded at the given window width (1280 px by default) with a small script
that measures, after layout, every code block (``pre``), table, image and displayed
formula of the page's article:

- a box whose content is wider than the box (``scrollWidth > clientWidth``: hidden, or
  only seen by scrolling sideways), or that reaches past the right edge of the article;
- code lines wider than their block that do not wrap (``white-space: pre``), counted
  one by one.

Prints one line per page and every offending element, and exits 1 if any was found.
With ``--screenshots DIR``, a PNG of the top of each page (1280 x 2400 px) is written
there, for a person to look at. Needs ``chromium`` (Debian: ``apt-get install chromium``)
or ``CHROMIUM=/path/to/chrome``.
"""
import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Runs in the page once it has loaded; puts its findings in <body data-layout="...">.
MEASURE = r"""
<script>
window.addEventListener("load", function () {
  var article = document.querySelector("article, [role=main], div.body") || document.body;
  var right = article.getBoundingClientRect().right;
  var canvas = document.createElement("canvas").getContext("2d");
  var found = [], lines = 0, cutLines = 0, boxes = 0;
  function name(el) {
    var t = (el.innerText || el.getAttribute("alt") || el.tagName).trim().split("\n")[0];
    return el.tagName.toLowerCase() + ": " + t.slice(0, 70);
  }
  var sel = "pre, table, img, svg, div.math, span.math, mjx-container";
  article.querySelectorAll(sel).forEach(function (el) {
    if (el.closest("nav, .sidebar-drawer, .toc-drawer, header, footer")) return;
    boxes++;
    var r = el.getBoundingClientRect();
    var cut = el.scrollWidth > el.clientWidth + 1 && el.tagName !== "svg"
              && el.tagName !== "IMG";
    var past = r.right > right + 1;
    // A table inside a wrapper that scrolls: the wrapper is the box a reader sees.
    var wrap = el.parentElement;
    if (el.tagName === "TABLE" && wrap && wrap.scrollWidth > wrap.clientWidth + 1) cut = true;
    if (cut || past) found.push({what: name(el), scroll: el.scrollWidth,
                                 box: el.clientWidth, right: Math.round(r.right),
                                 article_right: Math.round(right)});
    if (el.tagName === "PRE") {
      var cs = getComputedStyle(el);
      canvas.font = cs.font;
      var width = el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
      var wraps = cs.whiteSpace !== "pre" && cs.whiteSpace !== "nowrap";
      el.textContent.replace(/\n$/, "").split("\n").forEach(function (line) {
        lines++;
        if (!wraps && canvas.measureText(line).width > width + 1) cutLines++;
      });
    }
  });
  document.body.setAttribute("data-layout", JSON.stringify(
      {boxes: boxes, lines: lines, cut_lines: cutLines, overflow: found}));
});
</script>
"""

SKIP = {"genindex.html", "search.html", "py-modindex.html"}


def chromium():
    exe = os.environ.get("CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
         if p), None)
    if exe is None:
        raise SystemExit("check_layout: no chromium found (apt-get install chromium, or set "
                         "CHROMIUM)")
    return exe


def run_chromium(exe, args, timeout=60):
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-dev-shm-usage", "--no-first-run", "--mute-audio",
            f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]
    try:
        return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(base[-1].split("=", 1)[1], ignore_errors=True)


def measure(exe, page, width):
    res = run_chromium(exe, [f"--window-size={width},1000", "--virtual-time-budget=10000",
                             "--dump-dom", "file://" + page])
    m = re.search(r'data-layout="([^"]*)"', res.stdout)
    if not m:
        raise RuntimeError(f"chromium gave no measurement for {page}: {res.stderr[-2000:]}")
    return json.loads(html.unescape(m.group(1)))


def pages_of(root):
    out = []
    for dirpath, _, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.split(os.sep)[0] in ("_modules", "_sources", "_static", "_images"):
            continue
        out += [os.path.join(dirpath, f) for f in sorted(files)
                if f.endswith(".html") and f not in SKIP]
    return sorted(out)


def check(html_dir, width=1280, screenshots=None, out=sys.stdout):
    """Measure every page; return ``{page: measurement}`` (see the module docstring)."""
    exe = chromium()
    html_dir = os.path.abspath(html_dir)
    work = tempfile.mkdtemp(prefix="layout-")
    results = {}
    try:
        copy = os.path.join(work, "html")
        shutil.copytree(html_dir, copy)
        for page in pages_of(copy):
            with open(page, encoding="utf-8") as f:
                text = f.read()
            with open(page, "w", encoding="utf-8") as f:
                f.write(text.replace("</body>", MEASURE + "</body>", 1))
            rel = os.path.relpath(page, copy)
            results[rel] = measure(exe, page, width)
            r = results[rel]
            print(f"{rel}: {len(r['overflow'])} of {r['boxes']} boxes cut off, "
                  f"{r['cut_lines']} of {r['lines']} code lines cut off", file=out)
            for item in r["overflow"]:
                print(f"    {item['what']!r}: content {item['scroll']} px in a box of "
                      f"{item['box']} px, right edge {item['right']} px (article ends at "
                      f"{item['article_right']} px)", file=out)
            if screenshots:
                os.makedirs(screenshots, exist_ok=True)
                with open(page, "w", encoding="utf-8") as f:
                    f.write(text)
                png = os.path.join(os.path.abspath(screenshots),
                                   rel.replace(os.sep, "_")[:-5] + ".png")
                run_chromium(exe, [f"--window-size={width},2400", f"--screenshot={png}",
                                   "file://" + page])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html_dir")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--screenshots", metavar="DIR")
    args = ap.parse_args(argv)
    results = check(args.html_dir, args.width, args.screenshots)
    boxes = sum(len(r["overflow"]) for r in results.values())
    lines = sum(r["cut_lines"] for r in results.values())
    total = sum(r["lines"] for r in results.values())
    print(f"{len(results)} pages at {args.width} px: {boxes} boxes cut off, "
          f"{lines} of {total} code lines cut off")
    return 1 if boxes or lines else 0


if __name__ == "__main__":
    sys.exit(main())
