"""``python -m benchmarks [NAME ...]``: which modules are benchmarks, and what each gets."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

from benchmarks import __main__ as runner


def test_helpers_are_not_benchmarks_and_every_benchmark_takes_argv() -> None:
    names = runner.available()
    assert "lot_truncation" in names and "bridge" in names
    assert not [n for n in names if n.startswith("_") or n == "results_io"]
    for name in names:
        main = importlib.import_module(f"benchmarks.{name}").main
        assert list(inspect.signature(main).parameters) == ["argv"], name


def test_named_benchmarks_run_alone_with_no_arguments(monkeypatch, capsys) -> None:
    calls: list[tuple[str, Any]] = []
    for name in ("lot_memory", "load_model"):
        module = importlib.import_module(f"benchmarks.{name}")
        monkeypatch.setattr(module, "main", lambda argv=None, n=name: calls.append((n, argv)))
    assert runner.main(["load_model"]) == 0
    assert calls == [("load_model", [])]  # its name is not passed on to its parser
    assert "load_model" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["nope"], ["lot_memory", "--batch-size", "4"]])
def test_unknown_names_and_options_are_refused(argv, capsys) -> None:
    assert runner.main(argv) == 2
    assert "available: bridge" in capsys.readouterr().err
