"""The reference tables of docs/contracts.md and docs/config.md, generated from the typed
models (`invoke contracts`), so a field added to a model cannot be missing from the docs:
a test fails when a checked-in doc is not what this module makes.

Only the tables between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->` are
written; the prose around them is the docs' own. A table with a `meaning` column keeps
each key's meaning as the doc has it (the models carry no descriptions): a new key gets
an empty one to fill in, a removed key's row goes."""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from goldbox import PROJECT_ROOT
from goldbox.cache import KINDS
from goldbox.catalog.metadata import BoxMetadata, BoxState
from goldbox.config import Platform, ProjectConfig
from goldbox.errors import GoldboxError
from goldbox.files import write_atomically
from goldbox.manifest import Manifest
from goldbox.plan_model import Plan

MARKER = re.compile(r"(<!-- generated:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)"
                    r"(<!-- /generated:(?P=name) -->)", re.S)


def type_name(annotation: object) -> str:
    """A field's type in words: `list of str`, `"unix" or "tcp"`, `int or null`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        limits = constraints(args[1:])
        return type_name(args[0]) + (f", {limits}" if limits else "")
    if origin is Literal:
        return " or ".join(json.dumps(arg) for arg in args)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"map of {type_name(args[0])} to {type_name(args[1])}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table" if annotation.__module__ == "goldbox.config" else "object"
    return getattr(annotation, "__name__", str(annotation))


def constraints(metadata: Sequence[object]) -> str:
    """Bounds and patterns pydantic checks, in words (allow-lists checked by a validator
    function are described in the docs' prose)."""
    words = []
    for item in metadata:
        if isinstance(item, FieldInfo):  # Field(...) inside a union's Annotated
            words.append(constraints(item.metadata))
            continue
        for attribute, word in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(item, attribute, None) is not None:
                words.append(f"{word} {getattr(item, attribute)}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            words.append(f"`{pattern}`")
    return ", ".join(word for word in words if word)


def default_of(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return "(section)"
    return "unset" if default is None else f"`{json.dumps(default)}`"


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The models a field holds, directly, in a list or dict, or as a union's variants."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _container_suffix(annotation: object) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _container_suffix(get_args(annotation)[0])
    if origin is list:
        return "[]"
    if origin is dict:
        return ".KEY"
    if origin in (Union, types.UnionType):
        return next((s for a in get_args(annotation) if (s := _container_suffix(a))), "")
    return ""


def _only_models(annotation: object) -> bool:
    """A section (or a choice of sections): its keys have rows, it has none itself."""
    if isinstance(annotation, type):
        return issubclass(annotation, BaseModel)
    if get_origin(annotation) is Annotated:
        return _only_models(get_args(annotation)[0])
    return get_origin(annotation) in (Union, types.UnionType) and all(
        _only_models(arg) for arg in get_args(annotation))


def rows(model: type[BaseModel], prefix: str = "", note: str = ""
         ) -> Iterator[tuple[str, str, str]]:
    """(key, type, default) of every field of `model` and of the models it holds; a
    variant of a union of models is noted by its `kind`."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if not _only_models(field.annotation):
            kind = type_name(field.annotation)
            limits = constraints(field.metadata)
            yield (f"`{key}`{note}", f"{kind}, {limits}" if limits else kind,
                   default_of(field))
        nested = _models_in(field.annotation)
        for variant in nested:
            kind_field = variant.model_fields.get("kind")
            variant_note = note
            if len(nested) > 1 and kind_field is not None:
                variant_note = f" ({key}.kind {type_name(kind_field.annotation)})"
            yield from rows(variant, key + _container_suffix(field.annotation) + ".",
                            variant_note)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(model: type[BaseModel], meanings: dict[str, str] | None = None) -> str:
    """The Markdown table of `model`; with `meanings`, a fourth column kept by key."""
    head = ["key", "type", "default"] + (["meaning"] if meanings is not None else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, kind, default in rows(model):
        cells = [key, kind, default]
        if meanings is not None:
            cells.append(meanings.get(key.split("`")[1], ""))
        lines.append("| " + " | ".join(_cell(cell) for cell in cells[:3])
                     + ("".join(f" | {cell}" for cell in cells[3:])) + " |")
    return "\n".join(lines) + "\n"


def cache_kinds_list() -> str:
    return "".join(f"- `{kind}`\n" for kind in KINDS)


def meanings_in(body: str) -> dict[str, str]:
    """key -> meaning from a generated table with a meaning column (its last cell)."""
    found = {}
    for line in body.splitlines():
        match = re.fullmatch(r"\| `([^`]+)` \|(?:(?:\\\||[^|])*\|){2} (.*) \|", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


# docs file -> marker name -> (model or maker, keeps a meaning column)
TABLES: dict[str, dict[str, tuple[type[BaseModel] | Callable[[], str], bool]]] = {
    "docs/contracts.md": {"plan": (Plan, False), "manifest": (Manifest, False),
                          "box-metadata": (BoxMetadata, False), "box-state": (BoxState, False),
                          "cache-kinds": (cache_kinds_list, False)},
    "docs/config.md": {"goldbox-toml": (ProjectConfig, True), "platform-toml": (Platform, False)},
}


def generated(relative: str, root: Path = PROJECT_ROOT) -> str:
    """The doc at `relative` with each of its marked tables made again from the models."""
    path = root / relative
    text = path.read_text(encoding="utf-8")
    wanted = TABLES[relative]
    seen = set()

    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in wanted:
            raise GoldboxError(f"{path}: unknown generated table {name!r} "
                               f"(known: {', '.join(sorted(wanted))})")
        seen.add(name)
        source, keeps_meanings = wanted[name]
        if isinstance(source, type):
            body = table(source, meanings_in(match.group("body")) if keeps_meanings else None)
        else:
            body = source()
        return match.group(1) + body + match.group(4)

    text = MARKER.sub(replace, text)
    missing = sorted(set(wanted) - seen)
    if missing:
        raise GoldboxError(f"{path}: no <!-- generated:NAME --> markers for "
                           f"{', '.join(missing)}")
    return text


def stale(root: Path = PROJECT_ROOT) -> list[str]:
    """The docs whose tables are not what the models make now."""
    return [relative for relative in TABLES
            if generated(relative, root) != (root / relative).read_text(encoding="utf-8")]


def write_docs(root: Path = PROJECT_ROOT) -> list[str]:
    """Write every doc whose tables changed; return their names."""
    changed = stale(root)
    for relative in changed:
        write_atomically(root / relative, generated(relative, root))
    return changed
