"""Shared set-up for the lines-of-thought benchmarks: model, batches, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["RESULTS", "batches", "summarise", "time_once", "write_result"]

RESULTS = Path(__file__).parent / "results"


def batches(model: Any, n_batches: int, batch_size: int, n_tokens: int = 50) -> list[torch.Tensor]:
    """Consecutive batches of default-corpus pseudo-sentences."""
    from tl_continuous.lines_of_thought.corpus import pseudo_sentences

    ps = pseudo_sentences(model, n_tokens=n_tokens, limit=n_batches * batch_size, seed=0)
    return [ps.tokens[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]


def time_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summarise(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "n": len(times)}


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        **data,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_avg_1min_at_end": os.getloadavg()[0],
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "note": "shared 2-core CPU; other jobs ran concurrently, ratios are within one run",
        },
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1))
    return path
