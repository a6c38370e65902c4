"""Static PNG export of the plotly figures, where a renderer is available.

plotly draws PNGs through kaleido (the ``viz`` extra), which drives a Chrome or Chromium
installed on the machine (Debian: ``apt-get install chromium``; ``make chromium`` does it).
:func:`png_export_available` says whether both are there; :func:`save_png` writes the file
atomically and, when a piece is missing, raises an error that says which and how to get it.

>>> import plotly.graph_objects as go
>>> fig = go.Figure(go.Scatter(y=[1, 3, 2]))
>>> if png_export_available():
...     path = save_png(fig, tempfile.mkdtemp() + "/line.png", width=300, height=200)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["PngExportUnavailable", "check_png_export", "png_export_available", "save_png"]


class PngExportUnavailable(RuntimeError):
    """kaleido or a Chrome/Chromium browser is missing, so no PNG can be drawn."""


def _missing() -> str | None:
    """What is missing for PNG export, or ``None`` when nothing is."""
    try:
        import kaleido  # noqa: F401
        from choreographer.browsers.chromium import Chromium
    except ImportError:
        return "kaleido is not installed (pip install 'tl-continuous[viz]')"
    if Chromium.find_browser(skip_local=False) is None:
        return (
            "no Chrome or Chromium was found for kaleido (install Debian's chromium package, "
            "e.g. `make chromium`, or set BROWSER_PATH to a Chrome binary)"
        )
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_png_export() -> None:
    """Raise :class:`PngExportUnavailable`, saying what is missing, unless PNGs can be drawn."""
    missing = _missing()
    if missing is not None:
        raise PngExportUnavailable(f"cannot export a PNG: {missing}")


def png_export_available() -> bool:
    """Whether :func:`save_png` can draw here (kaleido installed and a browser found)."""
    return _missing() is None


def save_png(
    fig: Any,
    path: str | os.PathLike[str],
    *,
    width: int = 900,
    height: int = 520,
    scale: float | int = 1,
) -> Path:
    """Write a plotly figure as a PNG file.

    The image is drawn into a temporary file beside ``path`` and moved into place, so a
    failure never leaves a half-written PNG.

    Args:
        fig: a plotly ``Figure`` (what every ``*_figure`` function of :mod:`tl_continuous.views`
            returns).
        path: the PNG file to write (its folder is created).
        width: width in CSS pixels.
        height: height in CSS pixels.
        scale: pixel density (2 for a sharp figure on a slide).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``fig`` is not a plotly figure.
        ValueError: ``width``, ``height`` or ``scale`` is not positive.
        PngExportUnavailable: kaleido or a browser is missing (the message says which).
    """
    if not callable(getattr(fig, "write_image", None)):
        raise TypeError(f"fig must be a plotly Figure (got {type(fig).__name__})")
    for name, value in (("width", width), ("height", height), ("scale", scale)):
        if not value > 0:
            raise ValueError(f"{name} must be positive (got {value})")
    check_png_export()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", prefix=f".{path.stem}-", dir=path.parent)
    os.close(fd)
    try:
        fig.write_image(tmp, format="png", width=width, height=height, scale=scale)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a figure is for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
