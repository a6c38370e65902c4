"""Time ``load_model()`` from the converted cache (issue 2: target under 5 s).

Each load runs in a fresh interpreter so no import or file cache of this process helps;
the import of torch/TransformerLens is timed separately from the load itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from benchmarks._results_io import write_result

_CHILD = """
import json, time
t0 = time.perf_counter()
import tl_continuous.models as m
t1 = time.perf_counter()
model = m.load_model()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1}))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="load_model() from the converted cache")
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args(argv or []).repeats
    subprocess.run([sys.executable, "-c", _CHILD], check=True, capture_output=True)  # warm cache
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD], check=True, capture_output=True, text=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    load = [r["load_s"] for r in runs]
    imp = [r["import_s"] for r in runs]
    print(
        f"load_model() from cache: median {statistics.median(load):.2f} s "
        f"(runs {', '.join(f'{x:.2f}' for x in load)}); import {statistics.median(imp):.2f} s"
    )
    write_result("load_model", {"load_s": load, "import_s": imp})


if __name__ == "__main__":
    main(sys.argv[1:])
