"""Figures of the dynamics of lines of thought.

Each function returns a ``plotly.graph_objects.Figure``; plotly is imported when called. They
only draw results computed in :mod:`tl_continuous.lines_of_thought` (no computation here beyond
taking logarithms and projections for display).

>>> from tl_continuous.lines_of_thought.synthetic import linear_gaussian_ensemble
>>> from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, VarianceLawFit
>>> ens = linear_gaussian_ensemble(n=200, n_layers=6, d_model=10, rank=4, seed=0)
>>> stats = ResidualStatistics.from_tensors(ens.trajectories, ens.U, ens.S, progress=False)
>>> fig = variance_law_figure(stats, VarianceLawFit.from_statistics(stats))
>>> [trace.type for trace in fig.data]
['heatmap', 'scatter', 'scatter']
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from tl_continuous.lines_of_thought.controls import DynamicsSummary, LayerDiagnostics
    from tl_continuous.lines_of_thought.dynamics import ResidualStatistics, VarianceLawFit

__all__ = [
    "controls_figure",
    "layer_diagnostics_figure",
    "projection_figure",
    "variance_law_figure",
]


def variance_law_figure(stats: ResidualStatistics, fit: VarianceLawFit | None = None) -> Any:
    """Natural log of the residual variance over ``(t, t + tau)``, and against ``t + tau``.

    Left: heat map of ``ln var`` with the source layer ``t`` on the vertical axis and the target
    ``t + tau`` on the horizontal one (layer times). Right: every pair's ``ln var`` against
    ``t + tau`` coloured by ``tau``, with the fitted line ``ln alpha + lam (t + tau)`` over the
    fitted range when ``fit`` is given.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    times = stats.times.tolist()
    table = torch.log(stats.table("variance"))
    z = [[None if math.isnan(v) else v for v in row] for row in table.tolist()]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("ln var(dx) over (t, t + tau)", "ln var(dx) against t + tau"),
    )
    fig.add_trace(
        go.Heatmap(
            x=times,
            y=times,
            z=z,
            colorscale="Viridis",
            colorbar={"title": "ln var", "x": 0.45},
            hovertemplate="t=%{y}<br>t+tau=%{x}<br>ln var=%{z:.3f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    target = stats.times[stats.t + stats.tau]
    fig.add_trace(
        go.Scatter(
            x=target.tolist(),
            y=torch.log(stats.variance).tolist(),
            mode="markers",
            marker={"color": stats.tau.tolist(), "colorscale": "Plasma", "size": 5},
            text=[
                f"t={t}, tau={u}" for t, u in zip(stats.t.tolist(), stats.tau.tolist(), strict=True)
            ],
            name="pairs",
        ),
        row=1,
        col=2,
    )
    if fit is not None:
        lo, hi = fit.layers
        xs = [times[lo + 1] if hi - lo > 1 else times[lo], times[hi - 1]]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[fit.log_alpha + fit.lam * x for x in xs],
                mode="lines",
                line={"color": "black"},
                name=(f"fit: ln alpha={fit.log_alpha:.2f}, lam={fit.lam:.3f}, R2={fit.r2:.3f}"),
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="t + tau", row=1, col=1)
    fig.update_yaxes(title_text="t", autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="t + tau", row=1, col=2)
    fig.update_yaxes(title_text="ln var per coordinate", row=1, col=2)
    fig.update_layout(legend={"orientation": "h", "y": -0.2})
    return fig


def layer_diagnostics_figure(diag: LayerDiagnostics) -> Any:
    """Per-layer departure from the model: score with its threshold, kurtosis and off-fit.

    >>> from tl_continuous.lines_of_thought.controls import LayerDiagnostics
    >>> d = LayerDiagnostics([1.0, 2.0], [0.1, 2.0], [0.05, 0.9], [0.5, 9.0], [0.0, 7.0], [1],
    ...                      3.5, 1)
    >>> len(layer_diagnostics_figure(d).data)
    4
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    colors = ["crimson" if i in diag.flagged else "steelblue" for i in range(len(diag.times))]
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        subplot_titles=(
            f"score (flag above {diag.threshold})",
            "mean |excess kurtosis| of the residuals",
            "|ln var - fit| / fit residual sd",
        ),
    )
    fig.add_trace(
        go.Bar(x=diag.times, y=diag.score, marker_color=colors, name="score"), row=1, col=1
    )
    fig.add_trace(
        go.Scatter(
            x=[diag.times[0], diag.times[-1]],
            y=[diag.threshold, diag.threshold],
            mode="lines",
            line={"dash": "dash", "color": "black"},
            name="threshold",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(x=diag.times, y=diag.kurtosis, marker_color=colors, name="kurtosis"), row=2, col=1
    )
    fig.add_trace(
        go.Bar(x=diag.times, y=diag.off_fit, marker_color=colors, name="off fit"), row=3, col=1
    )
    fig.update_xaxes(title_text="layer (t)", row=3, col=1)
    fig.update_layout(showlegend=False, height=700)
    return fig


def controls_figure(summaries: list[DynamicsSummary]) -> Any:
    """Mean step ``|x(t+1) - x(t)|`` and ensemble spread per layer, one line per ensemble.

    >>> from tl_continuous.lines_of_thought.controls import DynamicsSummary
    >>> from tl_continuous.lines_of_thought.dynamics import VarianceLawFit
    >>> s = torch.tensor([1.0, 2.0, 3.0])
    >>> fit = VarianceLawFit.fit(s, torch.exp(s))
    >>> summary = DynamicsSummary("m", fit, 0.0, 0.05, 0.9, [1.0, 2.0], [1.0, 2.0, 3.0],
    ...                           [1.0, 1.0, 1.0])
    >>> len(controls_figure([summary]).data)
    2
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("mean step |x(t+1) - x(t)|", "ensemble spread")
    )
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for k, s in enumerate(summaries):
        color = palette[k % len(palette)]
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(s.step) + 1)),
                y=s.step,
                mode="lines+markers",
                name=s.name,
                line={"color": color},
                legendgroup=s.name,
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=list(range(len(s.spread))),
                y=s.spread,
                mode="lines",
                name=s.name,
                line={"color": color, "dash": "dot"},
                legendgroup=s.name,
                showlegend=False,
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="layer transition", row=1, col=1)
    fig.update_xaxes(title_text="layer index", row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=2)
    return fig


def projection_figure(
    true: Float[Tensor, "n d_model"],
    others: dict[str, Float[Tensor, "m d_model"]],
    basis: Float[Tensor, "d_model k"],
    *,
    dims: tuple[int, int] = (1, 2),
    max_points: int = 1000,
) -> Any:
    """Ensembles projected on two singular directions (default ``u_2, u_3``, the paper's view).

    Args:
        true: the true pilots at a layer.
        others: labelled ensembles to overlay (extrapolated, simulated...).
        basis: the layer's singular vectors ``[d_model, k]``.
        dims: the two columns of ``basis`` to project on (0-based).
        max_points: at most this many points per ensemble are drawn.

    >>> b = torch.eye(4)
    >>> len(projection_figure(torch.randn(10, 4), {"sim": torch.randn(10, 4)}, b).data)
    2
    """
    import plotly.graph_objects as go

    if basis.shape[1] <= max(dims):
        raise ValueError(f"basis has {basis.shape[1]} columns; dims {dims} need more")
    fig = go.Figure()
    for name, pts in {"true": true, **others}.items():
        proj = pts[:max_points].to(torch.float64) @ basis[:, list(dims)].to(torch.float64)
        fig.add_trace(
            go.Scattergl(
                x=proj[:, 0].tolist(),
                y=proj[:, 1].tolist(),
                mode="markers",
                marker={"size": 3, "opacity": 0.5},
                name=name,
            )
        )
    fig.update_layout(
        xaxis_title=f"u{dims[0] + 1}", yaxis_title=f"u{dims[1] + 1}", yaxis_scaleanchor="x"
    )
    return fig
