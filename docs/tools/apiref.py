"""Which modules the API reference documents, and on which page (shared by the build's hook,
its griffe extension and tests/test_docs.py).

A module is documented when it is public (no path component starts with ``_``) and either
defines a non-empty ``__all__`` or is a package (its docstring introduces the page). Every
module is found by griffe (static analysis: nothing of the package is imported).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "tl_continuous"

# page (under docs/api/) -> (title, the top-level names of tl_continuous whose modules it holds)
PAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "continuous": ("Continuous tokens", ("continuous", "patching")),
    "experiments": ("Experiments (continuous tokens)", ("experiments",)),
    "lines_of_thought": ("Lines of thought", ("lines_of_thought",)),
    "testbed": ("Counting testbed", ("testbed",)),
    "features": ("SAE features", ("features",)),
    "models": ("Models", ("models", "tiny", "weight_layout")),
    "views": ("Figures and views", ("views",)),
    "backends": ("Backends", ("backends",)),
    "programs": ("Programs (command line)", ("cli", "reports")),
}


def load_package():  # -> griffe.Module
    """The package as griffe sees it (docstrings parsed as Google style)."""
    import griffe

    return griffe.load(
        PACKAGE,
        search_paths=[str(ROOT)],
        docstring_parser="google",
        resolve_aliases=False,
    )


def _modules(module):  # module first, then its submodules, sorted by path
    yield module
    subs = [m for m in module.modules.values() if not m.is_alias]  # not `import x` in a module
    for sub in sorted(subs, key=lambda m: m.path):
        yield from _modules(sub)


def documented_modules(pkg) -> dict[str, list[str]]:
    """page -> the paths of the modules it documents, packages first.

    Raises:
        ValueError: a public module belongs to no page (add its top-level name to ``PAGES``).
    """
    owner = {top: page for page, (_, tops) in PAGES.items() for top in tops}
    pages: dict[str, list[str]] = {page: [] for page in PAGES}
    for module in _modules(pkg):
        parts = module.path.split(".")
        if module is pkg or any(p.startswith("_") for p in parts[1:]):
            continue
        if not (module.exports or module.is_init_module):
            continue
        if parts[1] not in owner:
            raise ValueError(
                f"module {module.path} has public names but no API page: add {parts[1]!r} "
                "to PAGES in docs/tools/apiref.py"
            )
        pages[owner[parts[1]]].append(module.path)
    return pages


def public_names(pkg) -> dict[str, str]:
    """Every public name -> the path of the object it documents.

    The names: ``tl_continuous.__all__`` and the ``__all__`` of every documented module
    (the subpackages' included). Re-exports resolve to the defining module's object.
    """
    import importlib

    # The root's names are resolved on first use (PEP 562) from its ``_EXPORTS`` table, which
    # griffe cannot follow where a name is also a subpackage's (``continuous``).
    root = importlib.import_module(PACKAGE)
    names: dict[str, str] = {f"{PACKAGE}.{n}": f"{root._EXPORTS[n]}.{n}" for n in root.__all__}
    by_path = {m.path: m for m in _modules(pkg)}
    modules = [m for paths in documented_modules(pkg).values() for m in paths]
    for path in modules:
        module = by_path[path]
        for name in module.exports or ():
            member = module.members[name]
            target = member.final_target if member.is_alias else member
            names[f"{path}.{name}"] = target.path
    return names
