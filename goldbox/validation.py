"""Untrusted data into a pydantic model, or one line saying what is wrong.

Every reader of an outside format (goldbox.toml, a platform file, plan.json, a manifest,
a catalog's metadata, state and sites) goes through `validated` (JSON text through
`validated_json`), with `allowed` for the allow-lists of strings, so a bad value is reported the
same way everywhere: the file, the key, the value found and what was expected."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, ValidationError

from goldbox.errors import GoldboxError

M = TypeVar("M", bound=BaseModel)


def allowed(pattern: str | re.Pattern[str], expected: str) -> AfterValidator:
    """A validator for an Annotated str: the whole value matches `pattern` (fullmatch: no
    trailing newline slips through), else "expected <expected>"."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"expected {expected}")
        return value
    return AfterValidator(check)


def validated(model: type[M], data: object, label: str, *,
              expected: dict[str, str] | None = None) -> M:
    """`data` as a `model`, or one GoldboxError naming `label` and the first bad key.
    `expected` words what a key must hold where pydantic's own message would not say."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise GoldboxError(f"{label}: {describe_error(error, model, expected)}") from None


def validated_json(model: type[M], text: str, label: str, *,
                   expected: dict[str, str] | None = None) -> M:
    """A `model` from JSON text that must hold an object (a file, or what a server
    sent), or one GoldboxError naming `label`."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise GoldboxError(f"{label}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GoldboxError(f"{label}: expected a JSON object, found {type(data).__name__}")
    return validated(model, data, label, expected=expected)


def describe_error(error: Any, model: type[BaseModel],
                   expected: dict[str, str] | None = None) -> str:
    """One pydantic error as goldbox says it: the key, its value, what was expected."""
    loc = tuple(error["loc"])
    key = _key(model, loc)
    kind = error["type"]
    if kind == "missing":
        return f"missing key {key!r}"
    if kind == "extra_forbidden":
        names = sorted({name for m in _models_at(model, loc[:-1]) for name in m.model_fields})
        return f"unknown key {key!r}" + (f" (allowed: {', '.join(names)})" if names else "")
    if kind == "union_tag_invalid":
        ctx = error["ctx"]
        return f"{key}.kind = {ctx['tag']!r}: expected one of {ctx['expected_tags']}"
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "expected")
    if expected and key in expected:
        message = f"expected {expected[key]}"
    if not key:
        return message
    if kind == "value_error" and isinstance(error.get("input"), dict):
        return f"{key}: {message}"  # a check across keys names them itself
    return f"{key} = {error.get('input')!r}: {message}"


def _key(model: type[BaseModel], loc: tuple) -> str:
    """('versions', 0, 'version') -> 'versions[0].version'; the tag pydantic inserts for a
    member of a tagged union (('source', 'iso', 'url')) is left out: 'source.url'."""
    key = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            key += f"[{part}]"
        elif not _is_union_tag(model, loc[:i], part):
            key += f".{part}" if key else str(part)
    return key


def _is_union_tag(model: type[BaseModel], loc: tuple, part: str) -> bool:
    models = _models_at(model, loc)
    return len(models) > 1 and part in {_tag(m) for m in models}


def _models_at(model: type[BaseModel], loc: tuple) -> list[type[BaseModel]]:
    """The model(s) that describe the table at `loc`: several for a tagged union."""
    models = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        tagged = [m for m in models if _tag(m) == part]
        if tagged:  # ("source", "iso", ...): pydantic names the union member by its tag
            models = tagged
            continue
        field = models[0].model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        members = [a for a in (annotation, *get_args(annotation))
                   if isinstance(a, type) and issubclass(a, BaseModel)]
        models = members or [m for a in get_args(annotation) for m in _members(a)]
        if not models:
            return []
    return models


def _members(annotation: Any) -> list[type[BaseModel]]:
    return [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]


def _tag(model: type[BaseModel]) -> str | None:
    kind = model.model_fields.get("kind")
    return get_args(kind.annotation)[0] if kind else None
