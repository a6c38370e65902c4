"""Figures of the SAE-feature readings: the SAE's quality, the counting prompt's features along
the duration sweep, and lines of thought in features; the trained SAE beside its random
control in every figure.

Each function returns a ``plotly.graph_objects.Figure``; plotly is imported when called.

>>> from tl_continuous.features.quality import SAEQuality
>>> q = SAEQuality(explained_variance=0.8, l0=32.0, dead=10, d_sae=2048, n_tokens=1000,
...                mse=1.5, label="trained", hook_name="blocks.15.hook_resid_post")
>>> quality_figure([q]).data[0].type
'table'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tl_continuous.features.counting import CountFeatures
    from tl_continuous.features.lines import LinesOfThoughtFeatures
    from tl_continuous.features.quality import SAEQuality

__all__ = [
    "count_features_figure",
    "lines_features_figure",
    "nearest_count_figure",
    "quality_figure",
    "tracked_features_figure",
]

_DASH = ("solid", "dash", "dot", "dashdot")
_SAE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")  # one colour per SAE, every panel


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def quality_figure(qualities: Sequence[SAEQuality]) -> Any:
    """A table of each SAE's numbers on held-out activations (one column per SAE)."""
    import plotly.graph_objects as go

    if not qualities:
        raise ValueError("qualities must hold at least one SAEQuality")
    rows = [
        ("explained variance", [_fmt(q.explained_variance) for q in qualities]),
        ("L0 (active features per token)", [f"{q.l0:.1f}" for q in qualities]),
        (
            "dead features (never active)",
            [f"{q.dead} of {q.d_sae} ({100 * q.dead_fraction:.1f}%)" for q in qualities],
        ),
        ("held-out tokens", [str(q.n_tokens) for q in qualities]),
        ("next-token loss, clean (nats)", [_fmt(q.ce_clean) for q in qualities]),
        ("next-token loss, SAE spliced in", [_fmt(q.ce_sae) for q in qualities]),
        ("next-token loss, hook zeroed", [_fmt(q.ce_zero) for q in qualities]),
        ("loss recovered", [_fmt(q.loss_recovered) for q in qualities]),
    ]
    header = ["", *(q.label for q in qualities)]
    cells = [[name for name, _ in rows]] + [
        [values[i] for _, values in rows] for i in range(len(qualities))
    ]
    fig = go.Figure(
        go.Table(
            columnwidth=[2.2, *([1.5] * len(qualities))],
            header={"values": header, "align": "left", "font": {"size": 13}},
            cells={"values": cells, "align": "left", "height": 26},
        )
    )
    fig.update_layout(
        title=f"SAE quality on held-out activations of {qualities[0].hook_name}",
        template="plotly_white",
        height=380,
        margin={"t": 60, "b": 10},
    )
    return fig


def count_features_figure(results: Sequence[CountFeatures], m: int = 6) -> Any:
    """Per SAE (columns): its ``m`` features varying most along ``c`` at the last token,
    against ``c`` (top row) and against the plain count (bottom row)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not results:
        raise ValueError("results must hold at least one CountFeatures")
    titles = [f"{r.label}: against c" for r in results]
    titles += [f"{r.label}: against the plain count" for r in results]
    fig = make_subplots(
        rows=2,
        cols=len(results),
        subplot_titles=titles,
        vertical_spacing=0.14,
        horizontal_spacing=0.12,
    )
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    for col, r in enumerate(results, start=1):
        order = r.values.argsort()
        tracking = set(r.count_tracking().tolist())
        for j, f in enumerate(r.top_varying(m).tolist()):
            colour = palette[j % len(palette)]
            name = f"{r.label}: f{f}" + (" (tracks count)" if f in tracking else "")
            fig.add_trace(
                go.Scatter(
                    x=r.values[order].tolist(),
                    y=r.last[order, f].tolist(),
                    mode="lines",
                    line={"color": colour},
                    name=name,
                    legendgroup=f"{r.label}{f}",
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=r.counts.tolist(),
                    y=r.count_last[:, f].tolist(),
                    mode="lines+markers",
                    line={"color": colour},
                    name=name,
                    legendgroup=f"{r.label}{f}",
                    showlegend=False,
                ),
                row=2,
                col=col,
            )
        fig.update_xaxes(title_text="duration c of the repetitions", row=1, col=col)
        fig.update_xaxes(title_text="plain repetitions m", dtick=1, row=2, col=col)
        fig.update_yaxes(title_text="activation (last token)", row=1, col=col)
        fig.update_yaxes(title_text="activation (last token)", row=2, col=col)
    first = results[0]
    fig.update_layout(
        title=f"The {m} features that change most along c, per SAE ({first.n} × "
        f"'{first.word}' at duration c; last token)",
        template="plotly_white",
        height=760,
        legend={"font": {"size": 11}},
    )
    return fig


def nearest_count_figure(results: Sequence[CountFeatures]) -> Any:
    """For each ``c``, the plain count whose last-token reading is nearest: in each SAE's
    features and (dashed) in the raw residual stream."""
    import plotly.graph_objects as go

    if not results:
        raise ValueError("results must hold at least one CountFeatures")
    fig = go.Figure()
    first = results[0]
    order = first.values.argsort()
    fig.add_trace(
        go.Scatter(
            x=first.values[order].tolist(),
            y=first.residual_nearest[order].tolist(),
            mode="lines",
            line={"color": "black", "dash": "dash", "shape": "hv"},
            name="residual stream (no SAE)",
        )
    )
    for i, r in enumerate(results):
        order = r.values.argsort()
        fig.add_trace(
            go.Scatter(
                x=r.values[order].tolist(),
                y=r.nearest_count()[order].tolist(),
                mode="lines+markers",
                line={
                    "dash": _DASH[(i + 1) % len(_DASH)],
                    "shape": "hv",
                    "color": _SAE_COLOURS[i % len(_SAE_COLOURS)],
                },
                marker={"size": 5, "color": _SAE_COLOURS[i % len(_SAE_COLOURS)]},
                name=f"{r.label} SAE features",
            )
        )
    fig.update_layout(
        title=f"Nearest plain count of {first.n} shrunk repetitions (last token, "
        f"{first.hook_name})",
        xaxis_title="duration c of the repetitions",
        yaxis={"title": "nearest plain count m", "dtick": 1},
        template="plotly_white",
    )
    return fig


def lines_features_figure(results: Sequence[LinesOfThoughtFeatures]) -> Any:
    """Three panels, one line per SAE: the SAE's explained variance on each layer's pilots,
    the mean best ``|cos|`` of each layer's top bases directions with a decoder direction,
    and the share of a pilot's active features kept under truncation to ``K`` directions."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not results:
        raise ValueError("results must hold at least one LinesOfThoughtFeatures")
    first = results[0]
    fig = make_subplots(
        rows=1,
        cols=3,
        horizontal_spacing=0.1,
        subplot_titles=(
            "explained variance, per layer",
            f"best |cos|, top {first.k} directions",
            f"features kept, top K at t = {first.sae_layer + 1}",
        ),
    )
    layers = list(range(1, first.n_layers + 1))
    for i, r in enumerate(results):
        colour = _SAE_COLOURS[i % len(_SAE_COLOURS)]
        best, _ = r.max_alignment()
        common = {
            "mode": "lines+markers",
            "line": {"dash": _DASH[i % len(_DASH)], "color": colour},
            "marker": {"size": 4, "color": colour},
        }
        fig.add_trace(
            go.Scatter(x=layers, y=r.explained_variance.tolist(), name=r.label,
                       legendgroup=r.label, **common),
            row=1, col=1,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(x=layers, y=best.mean(dim=1).tolist(), name=r.label,
                       legendgroup=r.label, showlegend=False, **common),
            row=1, col=2,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(x=r.ks.tolist(), y=r.kept.tolist(), name=r.label,
                       legendgroup=r.label, showlegend=False, **common),
            row=1, col=3,
        )  # fmt: skip
    for col in (1, 2):
        fig.add_vline(x=first.sae_layer + 1, line={"color": "grey", "dash": "dot"}, row=1, col=col)
        fig.update_xaxes(title_text="layer t", row=1, col=col)
    fig.update_yaxes(title_text="1 - SSE / SST of the pilots", row=1, col=1)
    fig.update_yaxes(title_text="mean of the best |cos| with a feature", row=1, col=2)
    fig.update_xaxes(title_text="K", type="log", row=1, col=3)
    fig.update_yaxes(title_text="share of active features kept", range=[0, 1.02], row=1, col=3)
    fig.update_layout(
        title=f"Lines of thought in features ({first.metadata.get('n_trajectories')} pilots; "
        f"the SAE reads t = {first.sae_layer + 1}, dotted)",
        template="plotly_white",
        height=450,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def tracked_features_figure(result: LinesOfThoughtFeatures) -> Any:
    """Heat map: log10 of the mean activation, on each layer's pilots, of the features most
    active at the SAE's layer (columns, most active first); blank where the mean is 0.

    The colour is logarithmic because the residual stream's norm grows along the layers: the
    SAE's encoder applied to late layers' pilots gives activations tens of times those of its
    own layer.
    """
    import math

    import plotly.graph_objects as go

    means = result.tracked_mean.tolist()
    z = [[math.log10(v) if v > 0 else None for v in row] for row in means]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"f{f}" for f in result.tracked.tolist()],
            y=list(range(1, result.n_layers + 1)),
            customdata=means,
            colorscale="Viridis",
            colorbar={"title": "log10 mean act"},
            hovertemplate="t=%{y}<br>%{x}<br>mean activation=%{customdata:.3g}<extra></extra>",
        )
    )
    fig.add_hline(y=result.sae_layer + 1, line={"color": "white", "dash": "dot"})
    fig.update_layout(
        title=f"{result.label} SAE: its most active pilot features on every layer "
        f"(in distribution at t = {result.sae_layer + 1}, dotted, only)",
        xaxis_title="feature",
        yaxis_title="layer t",
        template="plotly_white",
    )
    return fig
