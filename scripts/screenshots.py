"""Screenshot every page of the documentation site at 1280 px, as a reader sees it.

    python scripts/screenshots.py                 # into /tmp/treewalk-screenshots/
    python scripts/screenshots.py --out /tmp/shots --height 4000 --only api

Builds the site with `mkdocs build` into a temporary folder, serves it on 127.0.0.1,
and takes one PNG per page with headless Chromium (Debian: `apt-get install chromium`).
Look at them before a release: code blocks that scroll sideways, broken pictures, tables
that do not fit. Not run in CI.
"""

import argparse
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if exe := shutil.which(name):
            return exe
    raise SystemExit("no chromium: apt-get install -y chromium")


def shoot(exe: str, url: str, out: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "treewalk-screenshots"
    )
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--only", default="", help="regex on the page path, e.g. 'api|faq'")
    args = parser.parse_args()
    exe = chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
        subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "-q", "--site-dir", str(site)],
            cwd=ROOT,
            check=True,
            env=env,
        )
        handler = functools.partial(QuietHandler, directory=str(site))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        try:
            pages = sorted(
                p.parent.relative_to(site).as_posix()
                for p in site.rglob("index.html")
                if not p.parent.relative_to(site).as_posix().startswith(("assets", "search"))
            )
            for page in pages:
                if args.only and not re.search(args.only, page):
                    continue
                name = "index" if page == "." else page.replace("/", "_")
                out = args.out / f"{name}.png"
                url = base + ("" if page == "." else page + "/")
                shoot(exe, url, out, args.width, args.height)
                print(out)
        finally:
            server.shutdown()


if __name__ == "__main__":
    main()
