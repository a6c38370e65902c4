"""The package's import graph: no cycles, analysis below programs, names from their modules.

Every module of ``tl_continuous`` is parsed with :mod:`ast` (all imports, also those inside
functions and under ``TYPE_CHECKING``); nothing is imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tl_continuous

ROOT = Path(tl_continuous.__file__).parent
PACKAGE = "tl_continuous"

# analysis packages: computations and result types, no programs
ANALYSIS = ("continuous", "experiments", "lines_of_thought", "testbed", "features", "views")
# the ground layer and what it must not import
GROUND = ("continuous", "backends", "_io", "_progress")
ABOVE_GROUND = (
    "models",
    "experiments",
    "lines_of_thought",
    "testbed",
    "features",
    "views",
    "patching",
    "reports",
    "cli",
)
PROGRAMS = ("reports", "cli")
# the SAE features read both papers: above their packages, below the figures
PAPERS = ("continuous", "experiments", "lines_of_thought", "backends", "models", "testbed")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Every module ``name`` imports (absolute names, line numbers), stdlib included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in MODULES else base, node.lineno))
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _graph() -> dict[str, set[str]]:
    """Edges between tl_continuous modules (an import of ``a.b.c`` depends on ``a.b.c``)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, imports in IMPORTS.items():
        for target, _ in imports:
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _under(name: str, parts: tuple[str, ...]) -> bool:
    return any(name == f"{PACKAGE}.{p}" or name.startswith(f"{PACKAGE}.{p}.") for p in parts)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_parser_sees_every_module() -> None:
    assert f"{PACKAGE}.cli" in MODULES and f"{PACKAGE}.reports.settings" in MODULES
    assert f"{PACKAGE}.lines_of_thought.collect" in _graph()[f"{PACKAGE}.reports.collect"]


def test_no_import_cycle() -> None:
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_analysis_packages_hold_no_programs() -> None:
    bad = [
        f"{name}:{line} imports {target}"
        for name, imports in IMPORTS.items()
        if _under(name, ANALYSIS)
        for target, line in imports
        if target == "argparse" or _under(target, PROGRAMS)
    ]
    assert not bad, "analysis modules must not hold programs:\n" + "\n".join(bad)


def test_names_come_from_their_defining_module() -> None:
    bad = []
    for name, path in MODULES.items():
        if name == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == PACKAGE and not node.level:
                bad += [
                    f"{name}:{node.lineno} from {PACKAGE} import {alias.name}"
                    for alias in node.names
                    if f"{PACKAGE}.{alias.name}" not in MODULES
                ]
    assert not bad, "import these names from the module that defines them:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        (GROUND, ABOVE_GROUND),
        (("views",), PROGRAMS),
        (PAPERS, ("features",)),
        (("features",), ("views", *PROGRAMS)),
    ],
    ids=["ground", "views", "papers-below-features", "features-below-views"],
)
def test_layers(lower: tuple[str, ...], higher: tuple[str, ...]) -> None:
    bad = [
        f"{name}:{line} imports {target}"
        for name, imports in IMPORTS.items()
        if _under(name, lower)
        for target, line in imports
        if _under(target, higher)
    ]
    assert not bad, f"{lower} must not import {higher}:\n" + "\n".join(bad)


def test_features_import_sae_lens_only_when_called() -> None:
    """SAELens is optional (and absent under TransformerLens 4): importing the package, its
    figures and its report program must not need it."""
    bad = [
        f"{name}:{node.lineno}"
        for name, path in MODULES.items()
        if _under(name, ("features", "views", "reports"))
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.Import | ast.ImportFrom)
        and any(
            (getattr(node, "module", None) or alias.name).split(".")[0] == "sae_lens"
            for alias in node.names
        )
    ]
    assert not bad, "module-level imports of sae_lens:\n" + "\n".join(bad)


def test_cli_help_does_not_import_torch() -> None:
    code = (
        "import sys; from tl_continuous.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'numpy', 'transformer_lens') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_private_internals_of_dependencies_only_in_backends() -> None:
    """Private TransformerLens / transformers modules (a path part starting with ``_``) and
    the bridge's private attributes are touched in ``tl_continuous.backends`` only."""
    private_attrs = ("_hook_registry", "_attn_implementation")
    bad = []
    for name, imports in IMPORTS.items():
        if _under(name, ("backends",)):
            continue
        bad += [
            f"{name}:{line} imports {target}"
            for target, line in imports
            if target.split(".")[0] in ("transformer_lens", "transformers")
            and any(part.startswith("_") for part in target.split(".")[1:])
        ]
        tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
        bad += [
            f"{name}:{node.lineno} uses .{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in private_attrs
        ]
    assert not bad, "private internals outside tl_continuous/backends:\n" + "\n".join(bad)
