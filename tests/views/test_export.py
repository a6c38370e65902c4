"""Static PNG export of plotly figures (kaleido + Chromium where available)."""

from __future__ import annotations

import os
import struct

import plotly.graph_objects as go
import pytest
from ci_requirements import requires

from tl_continuous.views import export
from tl_continuous.views.export import PngExportUnavailable, png_export_available, save_png


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    return width, height


@requires(png_export_available(), "kaleido or chromium (PNG export)")
def test_save_png_draws_the_figure_at_the_asked_size(tmp_path) -> None:
    fig = go.Figure(go.Scatter(y=[1, 3, 2]))
    path = save_png(fig, tmp_path / "sub" / "line.png", width=320, height=200, scale=2)
    assert _png_size(path.read_bytes()) == (640, 400)
    assert [p.name for p in path.parent.iterdir()] == ["line.png"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_bad_arguments_are_named(tmp_path) -> None:
    fig = go.Figure()
    with pytest.raises(TypeError, match="fig must be a plotly Figure"):
        save_png("not a figure", tmp_path / "x.png")
    with pytest.raises(ValueError, match="height must be positive"):
        save_png(fig, tmp_path / "x.png", height=0)
    assert not list(tmp_path.iterdir())


def test_missing_renderer_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(export, "_missing", lambda: "no Chrome or Chromium was found")
    assert not png_export_available()
    with pytest.raises(PngExportUnavailable, match="no Chrome or Chromium"):
        save_png(go.Figure(), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_a_failed_drawing_leaves_no_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(export, "_missing", lambda: None)
    fig = go.Figure()

    def broken(path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(fig, "write_image", broken)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        save_png(fig, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
