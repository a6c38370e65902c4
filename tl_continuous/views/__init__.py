"""Figures (plotly) and HTML views of analysis results; no computation happens here."""

from __future__ import annotations

__all__: list[str] = []
