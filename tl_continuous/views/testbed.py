"""Figures of the counting-testbed experiment (:class:`CountingContinuityResult`).

Each function returns a ``plotly.graph_objects.Figure``; plotly is imported when called.

>>> import torch
>>> from tl_continuous.testbed.experiment import CountingContinuityResult
>>> probs = torch.full((1, 2, 3, 10), 0.1)
>>> result = CountingContinuityResult(
...     ns=[1, 2], cs=[0.5, 1.0, 1.5], variants=["full"], probs=probs,
...     expected_std=torch.zeros(1, 2, 3), count_mass=torch.ones(1, 2, 3),
...     uneven_n=[1], uneven_sum=torch.ones(1), uneven_expected=torch.ones(1),
...     even_expected=torch.ones(1), n_prompts=1, seed=0)
>>> len(expected_count_figure(result).data)
4
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tl_continuous.testbed.experiment import CountingContinuityResult

__all__ = [
    "count_distribution_figure",
    "expected_count_figure",
    "uneven_durations_figure",
    "variants_figure",
]


def expected_count_figure(result: CountingContinuityResult, variant: str = "full") -> Any:
    """E[count] against ``c``, one line per ``n``, with clipped ``n·c`` dotted."""
    import plotly.graph_objects as go

    v = result.variants.index(variant)
    fig = go.Figure()
    for i, n in enumerate(result.ns):
        expected = result.expected[v, i]
        std = result.expected_std[v, i]
        fig.add_trace(
            go.Scatter(
                x=result.cs,
                y=expected.tolist(),
                error_y={"type": "data", "array": std.tolist(), "thickness": 0.5},
                mode="lines+markers",
                name=f"n = {n}",
                legendgroup=str(n),
            )
        )
        fig.add_trace(
            go.Scatter(
                x=result.cs,
                y=result.target[i].tolist(),
                mode="lines",
                line={"dash": "dot", "width": 1},
                name=f"clip(n·c), n = {n}",
                legendgroup=str(n),
                showlegend=False,
            )
        )
    fig.update_layout(
        title=f"Counting testbed: E[count] vs duration c of each target ({variant}; "
        f"MAE {result.mae(variant):.2f}, ignoring durations {result.ignoring_durations_mae():.2f})",
        xaxis_title="duration c of each target token",
        yaxis_title="E[count]",
    )
    return fig


def count_distribution_figure(
    result: CountingContinuityResult, n: int, variant: str = "full"
) -> Any:
    """Heatmap of the distribution over counts against ``c`` for one ``n``."""
    import plotly.graph_objects as go

    v, i = result.variants.index(variant), result.ns.index(n)
    probs = result.probs[v, i].T  # count c
    fig = go.Figure(
        go.Heatmap(
            x=result.cs,
            y=list(range(probs.shape[0])),
            z=probs.tolist(),
            colorscale="Viridis",
            colorbar={"title": "P(count)"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=result.cs,
            y=result.target[i].tolist(),
            mode="lines",
            line={"color": "white", "dash": "dot"},
            name="clip(n·c)",
        )
    )
    fig.update_layout(
        title=f"Distribution over counts, n = {n} targets at duration c ({variant})",
        xaxis_title="duration c",
        yaxis_title="count",
    )
    return fig


def variants_figure(result: CountingContinuityResult) -> Any:
    """E[count] against clipped ``n·c`` for every variant (ablations side by side)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    target = result.target.flatten().tolist()
    for v, name in enumerate(result.variants):
        fig.add_trace(
            go.Scatter(
                x=target,
                y=result.expected[v].flatten().tolist(),
                mode="markers",
                name=f"{name} (MAE {result.mae(name):.2f})",
            )
        )
    top = float(result.max_count)
    fig.add_trace(
        go.Scatter(x=[0, top], y=[0, top], mode="lines", line={"dash": "dot"}, name="y = x")
    )
    fig.update_layout(
        title="Ablations: E[count] vs clip(n·c)",
        xaxis_title="clip(n·c)",
        yaxis_title="E[count]",
    )
    return fig


def uneven_durations_figure(result: CountingContinuityResult) -> Any:
    """E[count] with uneven target durations and with the even ones of the same sum."""
    import plotly.graph_objects as go

    sums = result.uneven_sum.tolist()
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=sums, y=result.uneven_expected.tolist(), mode="markers", name="uneven")
    )
    fig.add_trace(
        go.Scatter(
            x=sums,
            y=result.even_expected.tolist(),
            mode="markers",
            marker={"symbol": "x"},
            name="even, same sum",
        )
    )
    top = float(result.max_count)
    fig.add_trace(
        go.Scatter(x=[0, top], y=[0, top], mode="lines", line={"dash": "dot"}, name="y = x")
    )
    vs_sum, vs_even = result.uneven_mae()
    fig.update_layout(
        title=f"Uneven durations: E[count] vs their sum (MAE {vs_sum:.2f}; "
        f"vs even durations of the same sum {vs_even:.2f})",
        xaxis_title="sum of the target durations",
        yaxis_title="E[count]",
    )
    return fig
