"""How every result type is saved and loaded (private helpers, one convention).

A result file carries a format tag ``"<kind>/<version>"`` (for example
``"tl_continuous.lines_of_thought/1"``). Tensors go to safetensors, whose string header holds
the tag and one JSON value per field; results without tensors go to a JSON object
``{"format": tag, "data": ...}``. Every write goes to a temporary sibling that is renamed into
place, so a file either is complete or is not there, and a failed write leaves nothing. Loading
checks the tag: a file of another kind, of another version, or a damaged file raises
:class:`FormatError` (a ``ValueError``) that names the path and what was expected.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as d:
...     p = save_json(pathlib.Path(d) / "x.json", "demo", 1, {"a": 1})
...     load_json(p, "demo", 1)
{'a': 1}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = [
    "FormatError",
    "atomic_write",
    "format_tag",
    "json_safe",
    "load_json",
    "load_tensors",
    "read_safetensors",
    "reading",
    "save_json",
    "save_tensors",
    "write_text",
]


class FormatError(ValueError):
    """A file is damaged, or holds another kind or version of result than the one asked for."""


def format_tag(kind: str, version: int) -> str:
    """The tag written into a file: ``"<kind>/<version>"``.

    >>> format_tag("tl_continuous.sweep", 1)
    'tl_continuous.sweep/1'
    """
    return f"{kind}/{int(version)}"


def json_safe(value: Any) -> Any:
    """``value`` with dict keys as strings and anything JSON cannot hold as its ``str``.

    >>> json_safe({1: (2, None), "x": object}) == {"1": [2, None], "x": str(object)}
    True
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place.

    The parent folder is created. If ``write`` raises, the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"path {path} is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _check_tag(path: Path, found: Any, kind: str, version: int, what: str | None) -> None:
    expected = format_tag(kind, version)
    if found == expected:
        return
    found_kind, _, found_version = str(found).rpartition("/")
    what = what or kind
    if found_kind == kind:
        raise FormatError(
            f"path {path} holds version {found_version} of {what} ({kind}); this tl-continuous "
            f"reads version {version}"
        )
    raise FormatError(f"path {path} is not a {what} file (its format is {found!r})")


@contextmanager
def reading(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Turn an error raised while a ``what`` is rebuilt from a file's contents into
    :class:`FormatError` naming ``path`` (a missing field, a wrong type, a failed check).

    >>> with reading("r.json", "Sweep"):
    ...     {}["grid"]
    Traceback (most recent call last):
    ...
    tl_continuous._io.FormatError: path r.json holds a damaged Sweep (KeyError: 'grid')
    """
    try:
        yield
    except FormatError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        raise FormatError(
            f"path {Path(path)} holds a damaged {what} ({type(err).__name__}: {err})"
        ) from err


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"path {path} does not exist")
    return path


def save_tensors(
    path: str | os.PathLike[str],
    kind: str,
    version: int,
    tensors: Mapping[str, Tensor],
    fields: Mapping[str, Any],
) -> Path:
    """Write ``tensors`` to a safetensors file whose header holds the tag and ``fields``.

    Each field is stored as JSON; tensors are made contiguous (and moved to the CPU).
    """
    from safetensors.torch import save_file

    header = {"format": format_tag(kind, version)}
    header |= {name: json.dumps(json_safe(value)) for name, value in fields.items()}
    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(data, str(tmp), metadata=header))


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, Tensor]]:
    """The header and every tensor of a safetensors file; the library's errors pass through.

    Callers name what they expected in their own error (:func:`load_tensors`, the shards of
    :mod:`tl_continuous.lines_of_thought.collect`).
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    return header, tensors


def load_tensors(
    path: str | os.PathLike[str], kind: str, version: int, what: str | None = None
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The fields and tensors of a file written by :func:`save_tensors` with this tag.

    ``what`` names the expected result type in error messages (default: ``kind``).

    Raises:
        FileNotFoundError: no file at ``path``.
        FormatError: the file is damaged or holds another kind or version.
    """
    path = _existing(path)
    try:
        header, tensors = read_safetensors(path)
    except Exception as err:
        raise FormatError(
            f"path {path} is not a readable safetensors file ({err}); expected a {what or kind} "
            "file"
        ) from err
    _check_tag(path, header.get("format"), kind, version, what)
    try:
        fields = {k: json.loads(v) for k, v in header.items() if k != "format"}
    except json.JSONDecodeError as err:
        raise FormatError(
            f"path {path} has a damaged header ({err}); expected a {what or kind} file"
        ) from err
    return fields, tensors


def save_json(path: str | os.PathLike[str], kind: str, version: int, data: Any) -> Path:
    """Write ``{"format": tag, "data": data}`` as JSON, atomically."""
    text = json.dumps({"format": format_tag(kind, version), "data": data})
    return write_text(path, text)


def load_json(
    path: str | os.PathLike[str], kind: str, version: int, what: str | None = None
) -> Any:
    """The ``data`` of a file written by :func:`save_json` with this tag (``what``: as in
    :func:`load_tensors`).

    Raises:
        FileNotFoundError: no file at ``path``.
        FormatError: the file is damaged or holds another kind or version.
    """
    path = _existing(path)
    try:
        content = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FormatError(
            f"path {path} is not a readable JSON file ({err}); expected a {what or kind} file"
        ) from err
    if not isinstance(content, dict) or "data" not in content or "format" not in content:
        raise FormatError(
            f"path {path} is not a tl-continuous result file (no format tag); expected a "
            f"{what or kind} file"
        )
    _check_tag(path, content.get("format"), kind, version, what)
    return content["data"]
