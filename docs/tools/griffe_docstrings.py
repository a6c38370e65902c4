"""A griffe extension: the package's docstrings, written for doctest and with Sphinx roles,
rendered as Markdown by mkdocstrings.

* a doctest block (``>>>`` lines and their output, up to a blank line) becomes a fenced
  ``pycon`` block, so that ``>>>`` is not read as a nested quote;
* ``:class:`~a.b.C``` and the other roles become a link to the documented object when the
  target resolves to one that the API reference renders, and plain code otherwise;
* a paragraph ending in ``::`` (reStructuredText's literal-block marker) ends in ``:``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import griffe

sys.path.insert(0, str(Path(__file__).resolve().parent))
import apiref

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc):`(~?)([^`]+)`")
PROMPT = re.compile(r"^(\s*)>>> ")
SECTION = re.compile(r"^(\s*)(\w[\w ]*):\s*$")
GROUPED = re.compile(r"^(\s+)(\w+(?:,\s*\w+)+):(\s.*)?$")


def split_grouped_args(text: str) -> str:
    """``a, b: text`` in an ``Args:`` section becomes one entry per name, each with the text
    (Google style has one name per entry; griffe would look for a parameter named ``a, b``)."""
    lines = text.split("\n")
    out: list[str] = []
    in_args = False
    i = 0
    while i < len(lines):
        line = lines[i]
        section = SECTION.match(line)
        if section and not line.startswith((" ", "\t")):
            in_args = section.group(2) in ("Args", "Arguments", "Parameters")
        elif line.strip() and not line.startswith((" ", "\t")):
            in_args = False
        grouped = GROUPED.match(line) if in_args else None
        if not grouped:
            out.append(line)
            i += 1
            continue
        indent, names, rest = grouped.group(1), grouped.group(2), grouped.group(3) or ""
        body = []
        i += 1
        while i < len(lines) and lines[i].startswith(indent + " ") and lines[i].strip():
            body.append(lines[i])
            i += 1
        for name in re.split(r",\s*", names):
            out += [f"{indent}{name}:{rest}", *body]
    return "\n".join(out)


def fence_doctests(text: str) -> str:
    """Wrap each doctest block in a ``pycon`` fence, at the block's own indentation."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        match = PROMPT.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match.group(1)
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        if out and out[-1].strip():
            out.append("")
        out += [f"{indent}```pycon", *(f"{indent}{b}" for b in block), f"{indent}```"]
    return "\n".join(out)


class Docstrings(griffe.Extension):
    """Rewrites docstrings once the whole package is loaded (targets must resolve)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path != apiref.PACKAGE:
            return
        self.pkg = pkg
        self.by_path: dict[str, Any] = {}
        self._index(pkg)
        pages = apiref.documented_modules(pkg)
        self.rendered_modules = {m for paths in pages.values() for m in paths}
        for obj in self.by_path.values():
            self._rewrite(obj)

    def _index(self, obj: Any) -> None:
        self.by_path[obj.path] = obj
        for member in obj.members.values():
            if not member.is_alias and member.path not in self.by_path:
                self._index(member)

    def _rendered(self, obj: Any) -> bool:
        """Whether the API reference renders ``obj`` (so that a link to it resolves)."""
        if obj.is_module:
            return obj.path in self.rendered_modules
        parent = obj.parent
        if parent is None:
            return False
        if parent.is_module:
            return parent.path in self.rendered_modules and obj.name in (parent.exports or ())
        return not obj.name.startswith("_") and self._rendered(parent)

    def _resolve(self, obj: Any, target: str) -> Any:
        name = target.lstrip(".")
        module = obj if obj.is_module else obj.module
        scopes = [obj.path]
        scope = obj
        while scope.parent is not None:
            scope = scope.parent
            scopes.append(scope.path)
        scopes.append(module.path)
        parts = module.path.split(".")
        scopes += [".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]
        for candidate in [*(f"{s}.{name}" for s in scopes), name]:
            found = self._lookup(candidate)
            if found is not None:
                return found
        return None

    def _lookup(self, path: str) -> Any:
        if path in self.by_path:
            return self.by_path[path]
        head, _, last = path.rpartition(".")
        parent = self.by_path.get(head)
        member = parent.members.get(last) if parent is not None else None
        if member is not None and member.is_alias:
            try:
                return member.final_target
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return None
        return member

    def _rewrite(self, obj: Any) -> None:
        if obj.docstring is None:
            return

        def role(match: re.Match[str]) -> str:
            tilde, target = match.groups()
            shown = target.rsplit(".", 1)[-1] if tilde else target.lstrip(".")
            found = self._resolve(obj, target)
            if found is not None and self._rendered(found):
                return f"[`{shown}`][{found.path}]"
            return f"`{shown}`"

        text = split_grouped_args(ROLE.sub(role, obj.docstring.value))
        text = re.sub(r"(\S)::\n", r"\1:\n", text)
        text = re.sub(r"(?m)^(\s*)::\n", "", text)
        obj.docstring.value = fence_doctests(text)
