"""mkdocs hooks: the pages generated at build time (nothing of them is committed).

* ``api/*.md``: the API reference, one page per group of modules (``apiref.PAGES``), each
  module rendered by mkdocstrings, and ``api/index.md``, the table of ``tl_continuous``'s
  public names;
* ``notebooks/*.md``: the demo notebooks with their outputs, converted from the executed
  copies that ``docs/tools/notebooks.py`` writes to ``build/notebooks/`` (``make docs`` runs it
  first); plotly figures draw with the ``assets/plotly.min.js`` of the installed plotly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))
import apiref
import notebooks
from griffe_docstrings import ROLE


def _summary(obj: Any) -> str:
    doc = obj.docstring.value if obj.docstring else ""
    doc = ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1]}`", doc)
    return doc.strip().split("\n\n")[0].replace("\n", " ").replace("|", "\\|")


def pkg_module(pkg: Any, path: str) -> Any:
    """The griffe module at ``path`` (a subpackage, not a same-named alias)."""
    module = pkg
    for part in path.split(".")[1:]:
        module = module.modules[part]
    return module


def own_members(pkg: Any, path: str) -> str:
    """The names of ``__all__`` that the module defines (re-exports are documented where they
    are defined), as the YAML of mkdocstrings' ``members`` option."""
    module = pkg_module(pkg, path)
    names = [n for n in module.exports or () if not module.members[n].is_alias]
    return "[" + ", ".join(names) + "]" if names else "false"


def api_pages() -> dict[str, str]:
    """``api/...md`` -> Markdown."""
    pkg = apiref.load_package()
    pages = apiref.documented_modules(pkg)
    page_of = {module: page for page, modules in pages.items() for module in modules}
    out: dict[str, str] = {}
    for page, modules in pages.items():
        title = apiref.PAGES[page][0]
        blocks = [f"# {title}\n"]
        for module in modules:
            members = own_members(pkg, module)
            blocks.append(f"::: {module}\n    options:\n      members: {members}\n")
        out[f"api/{page}.md"] = "\n".join(blocks)
    rows = ["| name | what it is | module |", "| --- | --- | --- |"]
    objects = {}
    for module in page_of:
        for name, member in pkg_module(pkg, module).members.items():
            if not member.is_alias:
                objects[f"{module}.{name}"] = member
    for public, path in apiref.public_names(pkg).items():
        if public.count(".") != 1:
            continue
        name = public.split(".")[1]
        target = objects[path]
        module = target.parent.path
        page = page_of[module]
        rows.append(
            f"| [`{name}`][{target.path}] | {_summary(target)} | "
            f"[`{module.removeprefix('tl_continuous.')}`]({page}.md#{module}) |"
        )
    index = [
        "# API reference\n",
        "Every public name of `tl_continuous` (`tl_continuous.__all__`), importable as "
        "`tl_continuous.<name>`; the pages below document every module with an `__all__`, "
        "grouped by subpackage.\n",
        *rows,
        "",
        "Pages: " + ", ".join(f"[{apiref.PAGES[p][0]}]({p}.md)" for p in pages) + ".",
    ]
    out["api/index.md"] = "\n".join(index) + "\n"
    return out


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    for uri, text in api_pages().items():
        files.append(File.generated(config, uri, content=text))
    for uri, content in notebooks.site_files().items():
        files.append(File.generated(config, uri, content=content))
    return files
