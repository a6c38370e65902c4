"""Screenshots of the built site for docs/img/: the getting-started page and an API page.

``make docs-screenshots`` builds the site and runs this: the site (``site/``) is served with
``python -m http.server`` on a free localhost port and drawn by headless Chromium (Debian's
``chromium``, ``make chromium``) at 1280x900. Each PNG is written to a temporary file and moved
into place whole.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "site"
IMG = ROOT / "docs" / "img"
SHOTS = {
    "docs_getting_started.png": "getting_started.html",
    "docs_api.png": "api/continuous.html",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise SystemExit("chromium is not installed: run `make chromium`")
    return found


def shoot(browser: str, url: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        tmp = out.with_suffix(".tmp.png")
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--window-size=1280,900",
                "--virtual-time-budget=5000",
                f"--screenshot={tmp}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.replace(tmp, out)


def main() -> int:
    if not (SITE / "index.html").exists():
        raise SystemExit("site/ is not built: run `make docs`")
    browser = chromium()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(SITE)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/"
        for _ in range(50):
            try:
                urllib.request.urlopen(base, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        for name, page in SHOTS.items():
            shoot(browser, base + page, IMG / name)
            print(f"docs/img/{name} <- {page}")
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
