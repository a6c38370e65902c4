"""The demo notebooks, executed and converted to site pages.

``python docs/tools/notebooks.py`` (``make docs`` runs it) executes each ``demos/*.ipynb``
with nbclient from the repository root, so this checkout's ``tl_continuous`` is the one
imported, and writes the executed copy to ``build/notebooks/`` (ignored by git) with the hash
of what it ran: the notebook and the package's sources. A copy whose hash still matches is
kept, so an unchanged checkout executes nothing. The committed notebooks stay without outputs.

:func:`site_files` turns the executed copies into Markdown pages for the mkdocs hook: code in
fenced blocks, text outputs in ``text`` blocks, PNG outputs as image files and plotly figures
(``PLOTLY_RENDERER=plotly_mimetype`` in the kernel) drawn by the installed plotly's own
``plotly.min.js``, served from the site itself (no CDN).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMOS = ROOT / "demos"
CACHE = ROOT / "build" / "notebooks"
PLOTLY_JS = "assets/plotly.min.js"


def source_hash(notebook: Path) -> str:
    """Hash of the notebook and every file of the package (what its outputs depend on)."""
    digest = hashlib.sha256(notebook.read_bytes())
    for path in sorted((ROOT / "tl_continuous").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def notebooks() -> list[Path]:
    return sorted(DEMOS.glob("*.ipynb"))


def execute(notebook: Path, *, force: bool = False, reuse: bool = False) -> Path:
    """Execute ``notebook`` into the cache unless an up-to-date copy is there.

    Args:
        notebook: a ``demos/*.ipynb`` file.
        force: execute even when the cached copy's hash matches.
        reuse: keep any cached copy, whatever its hash (for builds that only check links).
    """
    import nbclient
    import nbformat

    out = CACHE / notebook.name
    stamp = out.with_suffix(".sha256")
    key = source_hash(notebook)
    if out.exists() and not force and (reuse or (stamp.exists() and stamp.read_text() == key)):
        return out
    nb = nbformat.read(notebook, as_version=4)
    os.environ["PLOTLY_RENDERER"] = "plotly_mimetype"  # the kernel inherits it
    t0 = time.perf_counter()
    nbclient.NotebookClient(
        nb, timeout=900, startup_timeout=300, resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    print(f"executed {notebook.relative_to(ROOT)} in {time.perf_counter() - t0:.0f} s")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    tmp.replace(out)
    stamp.write_text(key)
    return out


def _fence(lang: str, text: str) -> str:
    ticks = "````" if "```" in text else "```"
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def _text(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value


def to_markdown(nb: dict, stem: str) -> tuple[str, dict[str, bytes]]:
    """A notebook with outputs -> (Markdown page, its image files by path under notebooks/)."""
    blocks: list[str] = []
    images: dict[str, bytes] = {}
    figures = 0
    for cell in nb["cells"]:
        source = _text(cell["source"])
        if cell["cell_type"] == "markdown":
            blocks.append(source)
            if not images and not figures and source.startswith("# ") and len(blocks) == 1:
                blocks.append(
                    f"*Executed when the site is built, from `demos/{stem}.ipynb` "
                    "(committed without outputs); run it yourself with "
                    f"`jupyter lab demos/{stem}.ipynb`.*"
                )
            continue
        if cell["cell_type"] != "code":
            continue
        blocks.append(_fence("python", source))
        for output in cell.get("outputs", []):
            kind = output["output_type"]
            if kind == "stream" and output.get("name") == "stderr":
                continue  # warnings of the build machine's environment (paths), not results
            if kind == "stream":
                blocks.append(_fence("text", _text(output["text"])))
            elif kind == "error":
                raise RuntimeError(f"{stem}.ipynb: a cell failed: {output['ename']}")
            elif kind in ("execute_result", "display_data"):
                data = output["data"]
                if "application/vnd.plotly.v1+json" in data:
                    figures += 1
                    fig = data["application/vnd.plotly.v1+json"]
                    div = f"{stem}-figure-{figures}"
                    payload = json.dumps(
                        [fig.get("data", []), fig.get("layout", {}), {"responsive": True}]
                    ).replace("</", "<\\/")
                    blocks.append(
                        f'<div id="{div}" class="notebook-figure"></div>\n'
                        f'<script>Plotly.newPlot("{div}", ...{payload});</script>'
                    )
                elif "image/png" in data:
                    name = f"{stem}/output-{len(images) + 1}.png"
                    images[name] = base64.b64decode(_text(data["image/png"]))
                    blocks.append(f"![output {len(images)}]({name})")
                elif "text/plain" in data:
                    blocks.append(_fence("text", _text(data["text/plain"])))
    if figures:
        blocks.insert(1, f'<script src="../{PLOTLY_JS}"></script>')
    return "\n\n".join(blocks) + "\n", images


def site_files() -> dict[str, str | bytes]:
    """The pages (``notebooks/*.md``), their images and ``plotly.min.js``, by site path.

    Raises:
        FileNotFoundError: a notebook has no executed copy (run this script first).
    """
    files: dict[str, str | bytes] = {}
    for notebook in notebooks():
        executed = CACHE / notebook.name
        if not executed.exists():
            raise FileNotFoundError(
                f"{executed} is missing: run `python docs/tools/notebooks.py` (make docs does)"
            )
        page, images = to_markdown(json.loads(executed.read_text()), notebook.stem)
        files[f"notebooks/{notebook.stem}.md"] = page
        files.update({f"notebooks/{k}": v for k, v in images.items()})
    from plotly.offline import get_plotlyjs

    files[PLOTLY_JS] = get_plotlyjs()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="execute even if up to date")
    parser.add_argument("--reuse", action="store_true", help="keep any executed copy")
    args = parser.parse_args(argv)
    for notebook in notebooks():
        execute(notebook, force=args.force, reuse=args.reuse)
    return 0


if __name__ == "__main__":
    sys.exit(main())
