"""Plotly figures of the continuous-tokens experiments (plotly is imported when called).

>>> import torch
>>> from tl_continuous.experiments.results import Sweep
>>> sweep = Sweep("counting", "m", "p", "c", torch.tensor([0.1, 1.0], dtype=torch.float64),
...               ("0", "1"), {"exact": torch.tensor([[0.2, 0.8], [0.6, 0.4]])}, expected=1)
>>> fig = sweep_figure(sweep)
>>> len(fig.data)
2
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tl_continuous.experiments.results import Sweep, SweepSet

__all__ = [
    "boolean_figure",
    "peak_figure",
    "save_figure",
    "sweep_figure",
]

_KNOB_TITLES = {
    "c": "duration c of the span",
    "lambda": "blend weight λ",
    "shift": "shift of every position",
    "scale": "scale s of every duration",
}


def sweep_figure(sweep: Sweep, rule: str | None = None, *, title: str | None = None) -> Any:
    """Readout probabilities along the sweep, one line per label.

    The expected answer's line is drawn thicker; argmax changes are marked by vertical
    dotted lines; ``distance`` (if any) is drawn dashed on the same axis.
    """
    import plotly.graph_objects as go

    rule = rule or sweep.rules[0]
    probs = sweep.probs[rule]
    x = sweep.grid.tolist()
    fig = go.Figure()
    for j, label in enumerate(sweep.labels):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=probs[:, j].tolist(),
                name=f"P({label})",
                mode="lines",
                line={"width": 4 if j == sweep.expected else 1.5},
            )
        )
    if sweep.distance is not None:
        name = "TV from blend of endpoints" if sweep.knob == "lambda" else "TV from unmodified"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=sweep.distance.tolist(),
                name=name,
                mode="lines",
                line={"dash": "dash", "color": "black"},
            )
        )
    for at, _, new in sweep.transitions(rule):
        fig.add_vline(
            x=at, line_dash="dot", line_color="grey", annotation_text=f"→{sweep.labels[new]}"
        )
    default_title = f"{sweep.experiment} on {sweep.model_name} (readout {rule!r})"
    fig.update_layout(
        title=title or default_title,
        xaxis_title=_KNOB_TITLES.get(sweep.knob, sweep.knob),
        yaxis_title="probability",
        template="plotly_white",
        hovermode="x unified",
    )
    return fig


def boolean_figure(sweeps: SweepSet, rule: str | None = None) -> Any:
    """P("1") along λ for every Boolean curve: one panel per operator pair, one line per
    input pair."""
    from plotly.subplots import make_subplots

    pairs = list(dict.fromkeys((s.meta["op_a"], s.meta["op_b"]) for s in sweeps.sweeps))
    cols = min(len(pairs), 5)
    rows = (len(pairs) + cols - 1) // cols
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=[f"{a} → {b}" for a, b in pairs], shared_yaxes=True
    )
    colors = {(0, 0): "#1f77b4", (0, 1): "#ff7f0e", (1, 0): "#2ca02c", (1, 1): "#d62728"}
    for s in sweeps.sweeps:
        k = pairs.index((s.meta["op_a"], s.meta["op_b"]))
        inputs = (s.meta["a"], s.meta["b"])
        r = rule or s.rules[0]
        one = s.labels.index("1")
        fig.add_trace(
            _line(
                x=s.grid.tolist(),
                y=s.probs[r][:, one].tolist(),
                name=f"{inputs[0]},{inputs[1]}",
                legendgroup=str(inputs),
                showlegend=k == 0,
                line={"color": colors.get(inputs)},
            ),
            row=k // cols + 1,
            col=k % cols + 1,
        )
    fig.update_layout(
        title='Boolean operator interpolation: P("1") along λ',
        template="plotly_white",
        height=300 * rows,
    )
    return fig


def _line(**kwargs: Any) -> Any:
    """A line ``plotly.graph_objects.Scatter`` (kept separate so plotly loads lazily)."""
    import plotly.graph_objects as go

    return go.Scatter(mode="lines", **kwargs)


def peak_figure(sweeps: SweepSet, rule: str | None = None) -> Any:
    """Counting dataset: fraction of expected counts that peak, per n, against 1/n."""
    import plotly.graph_objects as go

    summary = sweeps.peak_summary(rule)
    ns = list(summary["by_n"])
    fig = go.Figure(
        [
            go.Bar(x=ns, y=[summary["by_n"][n]["peak_fraction"] for n in ns], name="peak fraction"),
            go.Scatter(
                x=ns,
                y=[1 / int(n) for n in ns],
                name="baseline 1/n",
                mode="markers",
                marker={"symbol": "line-ew-open", "size": 30, "color": "black"},
            ),
        ]
    )
    fig.update_layout(
        title=f"{sweeps.experiment}: counts that become the argmax "
        f"(mean {summary['peak_fraction']:.2f} vs baseline {summary['baseline']:.2f})",
        xaxis_title="repetitions n",
        yaxis_title="fraction of counts 1..n that peak",
        yaxis_range=[0, 1],
        template="plotly_white",
    )
    return fig


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write a self-contained HTML file (plotly.js inlined, viewable offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True)
    return path
