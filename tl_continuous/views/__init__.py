"""Figures (plotly) for results; no computation happens here."""
