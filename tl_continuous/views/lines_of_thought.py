"""Figures of lines-of-thought ensembles: singular spectra, KL against K, trajectories.

Each function returns a ``plotly.graph_objects.Figure``; plotly is imported when called. The
dynamics figures (variance law, controls, point clouds) are in
:mod:`tl_continuous.views.lines_of_thought_dynamics`.

>>> from tl_continuous.lines_of_thought.synthetic import linear_gaussian_ensemble
>>> from tl_continuous.lines_of_thought.bases import TrajectoryBases
>>> ens = linear_gaussian_ensemble(n=50, n_layers=6, d_model=10, rank=4, seed=0)
>>> bases = TrajectoryBases(U=ens.U, S=ens.S, layer_names=[str(i) for i in range(6)])
>>> len(spectra_figure(bases).data)
1
>>> len(trajectory_figure(ens.trajectories, bases, layer=5, n_lines=3).data)
4
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from tl_continuous.lines_of_thought.bases import TrajectoryBases
    from tl_continuous.lines_of_thought.truncation import TruncationCurve

__all__ = ["kl_figure", "spectra_figure", "trajectory_figure"]


def spectra_figure(bases: TrajectoryBases, *, max_rank: int | None = None) -> Any:
    """Heat map of ``log10(sigma_i / sigma_1)`` per layer (rows) and index ``i`` (columns)."""
    import plotly.graph_objects as go

    spectra = bases.spectra().to(torch.float64)
    if max_rank is not None:
        spectra = spectra[:, :max_rank]
    rel = torch.log10(spectra / spectra[:, :1]).clamp(min=-8.0)
    fig = go.Figure(
        go.Heatmap(
            z=rel.tolist(),
            x=list(range(1, rel.shape[1] + 1)),
            y=list(range(1, rel.shape[0] + 1)),
            colorscale="Viridis",
            colorbar={"title": "log10 σ_i/σ_1"},
            hovertemplate="t=%{y}<br>i=%{x}<br>log10 σ_i/σ_1=%{z:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Singular spectra per layer ({bases.n_trajectories} trajectories)",
        xaxis_title="singular index i",
        yaxis_title="layer t",
        template="plotly_white",
    )
    return fig


def kl_figure(curves: Sequence[TruncationCurve]) -> Any:
    """Mean and median ``KL(p_K || p)`` against K (log scale), one pair of lines per reading,
    with the knee marked and the consecutive-sentence baseline dashed."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for curve in curves:
        ks = curve.ks.tolist()
        fig.add_trace(
            go.Scatter(x=ks, y=curve.kl_mean.tolist(), mode="lines+markers", name=curve.reading)
        )
        fig.add_trace(
            go.Scatter(
                x=ks,
                y=curve.kl_median.tolist(),
                mode="lines",
                line={"dash": "dot"},
                name=f"{curve.reading} (median)",
            )
        )
        fig.add_vline(x=curve.knee_k, line_dash="dot", annotation_text=f"knee {curve.knee_k}")
    if curves:
        fig.add_hline(
            y=curves[0].baseline, line_dash="dash", annotation_text="consecutive sentences"
        )
    fig.update_layout(
        title="KL(p_K ‖ p): the pilot truncated to its top K singular directions",
        xaxis_title="K",
        yaxis_title="KL (nats)",
        yaxis_type="log",
        template="plotly_white",
    )
    return fig


def trajectory_figure(
    trajectories: Float[Tensor, "n layer d_model"],
    bases: TrajectoryBases,
    *,
    layer: int = -1,
    dims: tuple[int, int] = (0, 1),
    n_lines: int = 20,
    extra: dict[str, Float[Tensor, "m layer d_model"]] | None = None,
) -> Any:
    """Lines of thought projected on two singular directions of one layer's basis.

    Args:
        trajectories: ``[n, layer, d_model]`` pilots (a :class:`LinesOfThought`'s).
        bases: the bases whose ``U[layer]`` is projected on.
        layer: which layer's basis (default: the last).
        dims: the two singular directions (0-based).
        n_lines: the first ``n_lines`` trajectories are drawn as lines through the layers;
            the other points of the ensemble at ``layer`` as a grey cloud.
        extra: labelled extra trajectories drawn as thick lines (e.g. one path under a
            sweep of durations).
    """
    import plotly.graph_objects as go

    if not -bases.n_layers <= layer < bases.n_layers:
        raise ValueError(f"layer must be in -{bases.n_layers}..{bases.n_layers - 1} (got {layer})")
    if bases.rank <= max(dims):
        raise ValueError(f"bases have rank {bases.rank}; dims {dims} need more")
    basis = bases.U[layer][:, list(dims)].to(torch.float64)
    proj = trajectories.to(torch.float64) @ basis  # n layer 2
    fig = go.Figure()
    fig.add_trace(
        go.Scattergl(
            x=proj[:, layer, 0].tolist(),
            y=proj[:, layer, 1].tolist(),
            mode="markers",
            marker={"size": 3, "color": "lightgrey"},
            name=f"ensemble at t={layer % bases.n_layers + 1}",
        )
    )
    for i in range(min(n_lines, proj.shape[0])):
        fig.add_trace(
            go.Scatter(
                x=proj[i, :, 0].tolist(),
                y=proj[i, :, 1].tolist(),
                mode="lines+markers",
                marker={"size": 3},
                line={"width": 1},
                opacity=0.6,
                showlegend=False,
            )
        )
    for name, lines in (extra or {}).items():
        p = lines.to(torch.float64) @ basis
        for i in range(p.shape[0]):
            fig.add_trace(
                go.Scatter(
                    x=p[i, :, 0].tolist(),
                    y=p[i, :, 1].tolist(),
                    mode="lines+markers",
                    line={"width": 3},
                    name=name if p.shape[0] == 1 else f"{name} {i}",
                )
            )
    fig.update_layout(
        title="Lines of thought projected on the last layer's singular directions",
        xaxis_title=f"u{dims[0] + 1}",
        yaxis_title=f"u{dims[1] + 1}",
        template="plotly_white",
    )
    return fig
