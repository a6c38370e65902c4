"""Speed and memory measurements. Each module runs on its own: ``python -m benchmarks.<name>``.

Benchmarks print ratios measured within one run (machines are shared and noisy) and write
their numbers to ``benchmarks/results/<name>.json``. They are not tests: nothing here asserts
a timing.
"""
