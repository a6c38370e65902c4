"""Run benchmarks: ``python -m benchmarks`` (all of them) or ``python -m benchmarks NAME ...``.

A benchmark is a module of this folder whose name does not start with ``_`` (helpers do) and
that defines ``main(argv: list[str] | None = None)``, parsing its own options from ``argv``.
The runner calls ``main([])``: every benchmark at its defaults, which are the sizes its
docstring and ``benchmarks/README.md`` document. Options go to one benchmark at a time with
``python -m benchmarks.NAME --option ...``. Prints a table of each benchmark's wall time.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def available() -> list[str]:
    """Benchmark module names, sorted."""
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    names = list(argv or [])
    known = available()
    if any(n.startswith("-") for n in names) or not set(names) <= set(known):
        bad = [n for n in names if n not in known]
        print(
            f"usage: python -m benchmarks [NAME ...]; unknown benchmark(s) {bad}; "
            f"available: {', '.join(known)} (options: python -m benchmarks.NAME --help)",
            file=sys.stderr,
        )
        return 2
    seconds: dict[str, float] = {}
    for name in names or known:
        print(f"== benchmarks.{name}", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main([])
        seconds[name] = time.perf_counter() - start
    print("\nbenchmark              wall time")
    for name, s in seconds.items():
        print(f"{name:22s} {s:8.1f} s")
    print(f"{'total':22s} {sum(seconds.values()):8.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
