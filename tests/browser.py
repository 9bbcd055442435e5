"""Open an HTML page in real headless Chromium: what loaded (images, circuitsvis views) and a screenshot."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--virtual-time-budget=15000"]

#: Appended to a copy of the page: after load, records every image's natural size and whether each circuitsvis
#: view (``.cv-view``) was rendered into, in ``<pre id="tlens-check">``.
PROBE = """<script>
window.addEventListener('load', () => {
  const started = Date.now();
  const check = () => {  // views render once the bundle is unpacked (asynchronously): wait for them, up to 8 s
    const imgs = [...document.images], views = [...document.querySelectorAll('.cv-view')];
    const rendered = views.filter(v => v.querySelector('canvas, svg, table, div')).length;
    if (rendered < views.length && Date.now() - started < 8000) { setTimeout(check, 100); return; }
    const r = {images: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
               sizes: imgs.map(i => [i.naturalWidth, i.naturalHeight]), views: views.length, rendered: rendered,
               text: document.body.innerText.length};
    const pre = document.createElement('pre'); pre.id = 'tlens-check'; pre.textContent = JSON.stringify(r);
    document.body.appendChild(pre);
  };
  setTimeout(check, 300);
});
</script>"""


def chromium() -> str:
    """The Chromium executable, or skip the test with a one-line reason."""
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the HTML report is not checked")
    return exe


def inspect_page(page: Path, workdir: Path, *, width: int = 1280, height: int = 2400) -> tuple[dict, Path]:
    """Load ``page`` (a copy with :data:`PROBE` beside it, so relative links still resolve) and return the probe's
    findings and a screenshot of the page."""
    exe = chromium()
    probe = page.with_name(page.stem + ".probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        dom = subprocess.run([exe, *FLAGS, f"--user-data-dir={workdir / 'profile-dom'}", "--dump-dom", probe.as_uri()],
                             capture_output=True, text=True, timeout=180).stdout
        shot = workdir / "screenshot.png"
        subprocess.run([exe, *FLAGS, f"--user-data-dir={workdir / 'profile-shot'}", f"--window-size={width},{height}",
                        f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=180)
    finally:
        probe.unlink()
    found = re.search(r'<pre id="tlens-check">([^<]*)</pre>', dom)
    assert found, "the probe script did not run: the page did not load in Chromium"
    return json.loads(found.group(1)), shot


def ink_fraction(png: Path) -> float:
    """Fraction of screenshot pixels that are not (near) white: 0 for a blank page."""
    from PIL import Image

    img = Image.open(png).convert("L")
    hist = img.histogram()
    return 1.0 - sum(hist[245:]) / (img.width * img.height)
