"""Figures of lines-of-thought ensembles: singular spectra, KL against K, trajectories, and
the mean pilot path under a sweep of durations.

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

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from tl_continuous.lines_of_thought.bases import TrajectoryBases
    from tl_continuous.lines_of_thought.duration_sweep import DurationSweepLines
    from tl_continuous.lines_of_thought.truncation import TruncationCurve

__all__ = ["duration_sweep_figure", "kl_figure", "spectra_figure", "trajectory_figure"]


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
    with the knee marked and the consecutive-sentence baseline dashed.

    The y axis is logarithmic, so points where the KL is not positive (``K = d_model``
    reproduces the pilot: KL = 0, or a rounding error below it) cannot be drawn: they are left
    out of the lines, listed in a note under the plot, and the y range is set from the
    positive values drawn (data and baseline), a quarter decade beyond them on each side.
    The baseline is a dashed trace (not a shape/annotation, whose y a log axis reads as an
    exponent: an annotation at a baseline of 8 nats stretched the axis to 1e8).
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    drawn: list[float] = []
    left_out: list[str] = []

    def positive(values: Tensor, name: str, ks: list[int]) -> list[float | None]:
        out: list[float | None] = []
        for k, v in zip(ks, values.tolist(), strict=True):
            if v > 0 and math.isfinite(v):
                out.append(v)
                drawn.append(v)
            else:
                out.append(None)
                left_out.append(f"{name} K={k} (KL={v:.3g})")
        return out

    for curve in curves:
        ks = curve.ks.tolist()
        fig.add_trace(
            go.Scatter(
                x=ks,
                y=positive(curve.kl_mean, curve.reading, ks),
                mode="lines+markers",
                name=curve.reading,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=ks,
                y=positive(curve.kl_median, f"{curve.reading} (median)", ks),
                mode="lines",
                line={"dash": "dot"},
                name=f"{curve.reading} (median)",
            )
        )
        fig.add_vline(x=curve.knee_k, line_dash="dot", annotation_text=f"knee {curve.knee_k}")
    if curves:
        baseline = curves[0].baseline
        ks_all = [k for c in curves for k in c.ks.tolist()]
        if baseline > 0 and math.isfinite(baseline):
            drawn.append(baseline)
            fig.add_trace(
                go.Scatter(
                    x=[min(ks_all), max(ks_all)],
                    y=[baseline, baseline],
                    mode="lines",
                    line={"dash": "dash", "color": "grey"},
                    name=f"consecutive sentences ({baseline:.3g})",
                )
            )
        else:
            left_out.append(f"baseline (KL={baseline:.3g})")
    layout: dict[str, Any] = {}
    if drawn:
        low, high = math.log10(min(drawn)), math.log10(max(drawn))
        layout["yaxis_range"] = [low - 0.25, high + 0.25]  # log axis: range in log10 units
    if left_out:
        fig.add_annotation(
            text="not drawn on the log axis (KL <= 0): " + ", ".join(left_out),
            xref="paper",
            yref="paper",
            x=0.0,
            y=-0.18,
            xanchor="left",
            showarrow=False,
            font={"size": 10},
        )
        layout["margin"] = {"b": 90}
    fig.update_layout(
        title="KL(p_K ‖ p): the pilot truncated to its top K singular directions",
        xaxis_title="K",
        yaxis_title="KL (nats, log scale)",
        yaxis_type="log",
        template="plotly_white",
        **layout,
    )
    return fig


def trajectory_figure(
    trajectories: Float[Tensor, "n layer d_model"],
    bases: TrajectoryBases,
    *,
    layer: int = -1,
    dims: tuple[int, int] | tuple[int, int, int] = (0, 1),
    n_lines: int = 20,
    extra: dict[str, Float[Tensor, "m layer d_model"]] | None = None,
) -> Any:
    """Lines of thought projected on two or three top singular directions of one layer.

    The directions are ``layer``'s own singular directions ranked by singular value
    (:meth:`TrajectoryBases.top`): ``dims=(0, 1)`` is the plane of its two largest, whatever
    position realignment gave them in ``U[layer]``. Axis ``i`` is labelled ``u_i(t=...)`` with
    the layer and the singular value.

    Args:
        trajectories: ``[n, layer, d_model]`` pilots (a :class:`LinesOfThought`'s).
        bases: the bases whose layer ``layer`` is projected on.
        layer: which layer's basis (default: the last).
        dims: two singular directions (0-based ranks by singular value) for a plane, three
            for a 3-D view.
        n_lines: the first ``n_lines`` trajectories are drawn as lines through the layers;
            the other points of the ensemble at ``layer`` as a grey cloud.
        extra: labelled extra trajectories drawn as thick lines (e.g. one path under a
            sweep of durations).

    Raises:
        ValueError: ``layer`` out of range, ``dims`` not two or three directions, or beyond
            the bases' rank.
    """
    import plotly.graph_objects as go

    if not -bases.n_layers <= layer < bases.n_layers:
        raise ValueError(f"layer must be in -{bases.n_layers}..{bases.n_layers - 1} (got {layer})")
    if len(dims) not in (2, 3) or min(dims) < 0:
        raise ValueError(f"dims must be two or three non-negative directions (got {dims})")
    if bases.rank <= max(dims):
        raise ValueError(f"bases have rank {bases.rank}; dims {dims} need more")
    basis = bases.top(layer, max(dims) + 1)[:, list(dims)].to(torch.float64)
    sigma = bases.spectra()[layer]
    t = layer % bases.n_layers + 1
    proj = trajectories.to(torch.float64) @ basis  # n layer len(dims)
    three = len(dims) == 3
    scatter = go.Scatter3d if three else go.Scatter
    cloud = go.Scatter3d if three else go.Scattergl

    def xyz(points: Tensor) -> dict[str, list[float]]:
        return {axis: points[..., i].tolist() for i, axis in enumerate("xyz"[: len(dims)])}

    fig = go.Figure()
    fig.add_trace(
        cloud(
            **xyz(proj[:, layer]),
            mode="markers",
            marker={"size": 2 if three else 3, "color": "lightgrey"},
            name=f"ensemble at t={t}",
        )
    )
    for i in range(min(n_lines, proj.shape[0])):
        fig.add_trace(
            scatter(
                **xyz(proj[i]),
                mode="lines+markers",
                marker={"size": 2 if three else 3},
                line={"width": 1 if not three else 2},
                opacity=0.6,
                showlegend=False,
            )
        )
    for name, lines in (extra or {}).items():
        p = lines.to(torch.float64) @ basis
        for i in range(p.shape[0]):
            fig.add_trace(
                scatter(
                    **xyz(p[i]),
                    mode="lines+markers",
                    line={"width": 3 if not three else 5},
                    name=name if p.shape[0] == 1 else f"{name} {i}",
                )
            )
    titles = [f"u{d + 1}(t={t}), σ={float(sigma[d]):.3g}" for d in dims]
    if three:
        fig.update_layout(
            scene={"xaxis_title": titles[0], "yaxis_title": titles[1], "zaxis_title": titles[2]}
        )
    else:
        fig.update_layout(xaxis_title=titles[0], yaxis_title=titles[1])
    fig.update_layout(
        title=f"Lines of thought projected on layer t={t}'s top singular directions "
        f"(ranked by σ; {bases.n_layers} layers)",
        template="plotly_white",
    )
    return fig


def duration_sweep_figure(
    sweep: DurationSweepLines,
    *,
    dims: tuple[int, int] = (0, 1),
    colorscale: str = "Viridis",
    distance: bool = True,
) -> Any:
    """The mean pilot path across layers for every ``c``, on the plain ensemble's bases.

    Left: the mean pilot of each layer projected on that layer's plain directions
    ``(u_{dims[0]+1}, u_{dims[1]+1})``, one path per ``c`` coloured by ``c`` (colour bar),
    the plain mean path in black, dashed. Right (``distance=True``): the distance of the mean
    pilot from the plain mean, in plain spreads, against the layer, one line per ``c``.

    >>> import torch
    >>> from tl_continuous.lines_of_thought.duration_sweep import DurationSweepLines
    >>> v, n, L, k, d = 3, 5, 4, 2, 6
    >>> sweep = DurationSweepLines(
    ...     values=torch.tensor([1.0, 0.5, 0.1], dtype=torch.float64),
    ...     coords=torch.randn(v, n, L, k, dtype=torch.float64),
    ...     means=torch.randn(v, L, d, dtype=torch.float64),
    ...     norm2=torch.ones(v, L, dtype=torch.float64),
    ...     variance=torch.ones(v, L, dtype=torch.float64),
    ...     plain_coords=torch.randn(n, L, k, dtype=torch.float64),
    ...     plain_mean=torch.zeros(L, d, dtype=torch.float64),
    ...     plain_norm2=torch.ones(L, dtype=torch.float64),
    ...     plain_variance=torch.ones(L, dtype=torch.float64),
    ...     basis=torch.zeros(L, d, k, dtype=torch.float64),
    ...     layer_names=[f"blocks.{i}.hook_resid_post" for i in range(L)],
    ...     shrink=[(0, 3)],
    ... )
    >>> fig = duration_sweep_figure(sweep)
    >>> len(fig.data)  # 3 paths + plain + colour bar + 3 distance lines
    8
    """
    import plotly.graph_objects as go
    from plotly.colors import sample_colorscale
    from plotly.subplots import make_subplots

    if len(dims) != 2 or not all(0 <= i < sweep.k for i in dims):
        raise ValueError(f"dims must be two coordinates in [0, k={sweep.k}) (got {dims})")
    values = sweep.values.tolist()
    low, high = min(values), max(values)
    scale = [(c - low) / (high - low) if high > low else 0.5 for c in values]
    colours = sample_colorscale(colorscale, scale)
    paths = sweep.mean_coords()[..., list(dims)]  # [n_values, n_layers, 2]
    plain = sweep.plain_mean_coords()[..., list(dims)]
    layers = list(range(1, sweep.n_layers + 1))
    fig = (
        make_subplots(
            rows=1,
            cols=2,
            column_widths=[0.55, 0.45],
            subplot_titles=("mean pilot path on the plain bases", "distance from the plain mean"),
        )
        if distance
        else go.Figure()
    )
    where = {"row": 1, "col": 1} if distance else {}
    for c, colour, path in zip(values, colours, paths, strict=True):
        fig.add_trace(
            go.Scatter(
                x=path[:, 0].tolist(),
                y=path[:, 1].tolist(),
                mode="lines+markers",
                line={"color": colour, "width": 2},
                marker={"size": 4, "color": colour},
                name=f"c = {c:g}",
                text=[f"t={t}" for t in layers],
                hovertemplate=f"c={c:g}<br>%{{text}}<extra></extra>",
                legendgroup=f"c={c:g}",
            ),
            **where,
        )
    fig.add_trace(
        go.Scatter(
            x=plain[:, 0].tolist(),
            y=plain[:, 1].tolist(),
            mode="lines+markers",
            line={"color": "black", "width": 2, "dash": "dash"},
            marker={"size": 4, "color": "black"},
            name="plain",
            text=[f"t={t}" for t in layers],
            hovertemplate="plain<br>%{text}<extra></extra>",
        ),
        **where,
    )
    fig.add_trace(  # carries the colour bar: the values of c as invisible markers
        go.Scatter(
            x=[None] * len(values),
            y=[None] * len(values),
            mode="markers",
            marker={
                "color": values,
                "colorscale": colorscale,
                "cmin": low,
                "cmax": high,
                "showscale": True,
                "colorbar": {"title": "c", "x": 1.02},
            },
            showlegend=False,
            hoverinfo="skip",
        ),
        **where,
    )
    a, b = dims
    axes = {  # sweep.basis holds each layer's top-k directions of the plain ensemble, by σ
        "xaxis_title": f"u{a + 1}(t): σ-rank {a + 1} direction of layer t",
        "yaxis_title": f"u{b + 1}(t): σ-rank {b + 1} direction of layer t",
    }
    if distance:
        dist = sweep.distance()
        for c, colour, row in zip(values, colours, dist, strict=True):
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=row.tolist(),
                    mode="lines+markers",
                    line={"color": colour},
                    marker={"size": 4},
                    name=f"c = {c:g}",
                    legendgroup=f"c={c:g}",
                    showlegend=False,
                ),
                row=1,
                col=2,
            )
        fig.update_xaxes(title_text=axes["xaxis_title"], row=1, col=1)
        fig.update_yaxes(title_text=axes["yaxis_title"], row=1, col=1)
        fig.update_xaxes(title_text="layer t", row=1, col=2)
        fig.update_yaxes(title_text="|mean_c - mean_plain| / plain spread", row=1, col=2)
    else:
        fig.update_layout(**axes)
    fig.update_layout(
        title=f"Pilot paths as the shrunk tokens' duration c shrinks ({sweep.n_trajectories} "
        f"sequences, tokens {sweep.shrink})",
        template="plotly_white",
        legend={"x": 1.12},
    )
    return fig
