"""Read tokens for a private catalog, one per teammate, so revoking one leaves the others
working. They live in `<catalog>/.goldbox-tokens.json`, mode 0600 (a dot file: never
served). nginx checks them (see serve.py); adding or revoking one rewrites the token map
of every site goldbox rendered for the catalog and reloads a running `invoke catalog-serve`.

The tokens are stored as they are, not hashed: stock nginx (Debian's build has no perl
or njs module) cannot hash a request header, and its `map` compares strings, so the
rendered token map must hold them anyway; both files are readable by their owner only.

Whoever can write the catalog can write this file, so it is untrusted input: it is
opened without following a link, and every name and token is checked on every load
against an allow-list (nginx config is rendered from it)."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Annotated

from pydantic import RootModel, ValidationError

from goldbox.catalog.layout import require_catalog_dir
from goldbox.catalog.store import Progress, catalog_lock, open_existing, write_file_atomically
from goldbox.errors import GoldboxError
from goldbox.validation import allowed

TOKENS_FILE = ".goldbox-tokens.json"
_TEAMMATE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,}")
EXPECTED_TEAMMATE = "a teammate name of 1-64 letters, digits, '.', '_', '@' or '-' " \
                    "(starting with a letter or digit)"
EXPECTED_TOKEN = "a token of 32 or more of A-Z a-z 0-9 _ -"
_MAX_BYTES = 1 << 20


Teammate = Annotated[str, allowed(_TEAMMATE, EXPECTED_TEAMMATE)]
Token = Annotated[str, allowed(_TOKEN, EXPECTED_TOKEN)]


class Tokens(RootModel[dict[Teammate, Token]]):
    """.goldbox-tokens.json: teammate name -> token."""


def tokens_path(catalog_dir: Path) -> Path:
    return catalog_dir / TOKENS_FILE


def read_no_follow(path: Path, what: str, where: str = "in the catalog") -> bytes | None:
    """The bytes of `path` (`what` it holds, for messages; at most 1 MiB), None if there is
    none; a link (lying `where`) or anything but a regular file is refused: a link planted
    in the catalog must not make goldbox read another file, and a dangling one must not
    make a private catalog public."""
    handle = open_existing(path, what, where)
    if handle is None:
        return None
    with handle:
        data = handle.read(_MAX_BYTES + 1)
    if len(data) > _MAX_BYTES:
        raise GoldboxError(f"{path}: larger than {_MAX_BYTES} bytes; expected {what}")
    return data


def parse_tokens(data: bytes, label: str) -> dict[str, str]:
    """Teammate name -> token from the file's bytes, or one line naming `label`, the key
    and what was expected."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise GoldboxError(f"{label}: not valid JSON: {exc}") from None
    try:
        return dict(Tokens.model_validate(raw).root)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        if not error["loc"]:
            raise GoldboxError(f"{label}: expected an object of teammate name -> token"
                               ) from None
        key = error["loc"][0]
        if error["loc"][-1] == "[key]":
            raise GoldboxError(f"{label}: teammate name {key!r}: expected {EXPECTED_TEAMMATE}"
                               ) from None
        raise GoldboxError(f"{label}: {key}: expected {EXPECTED_TOKEN}") from None


def load_tokens(catalog_dir: Path) -> dict[str, str] | None:
    """Teammate name -> token; None when the catalog is public (no token file)."""
    path = tokens_path(catalog_dir)
    data = read_no_follow(path, "the catalog's tokens")
    return None if data is None else parse_tokens(data, str(path))


def _save(catalog_dir: Path, tokens: dict[str, str]) -> None:
    write_file_atomically(tokens_path(catalog_dir),
                          (json.dumps(tokens, indent=2, sort_keys=True) + "\n").encode(),
                          mode=0o600)


def add_token(catalog_dir: Path, name: str, progress: Progress = print) -> str:
    """A new read token for teammate `name`; makes the catalog private if it was not."""
    if not _TEAMMATE.fullmatch(name):
        raise GoldboxError(f"catalog-token add {name!r}: expected {EXPECTED_TEAMMATE}")
    require_catalog_dir(catalog_dir, create=False)
    with catalog_lock(catalog_dir, progress):
        tokens = load_tokens(catalog_dir) or {}
        if name in tokens:
            raise GoldboxError(f"{tokens_path(catalog_dir)}: {name} already has a token; "
                               f"revoke it first to issue a new one")
        tokens[name] = secrets.token_urlsafe(24)  # 192 bits, 32 characters
        _save(catalog_dir, tokens)
    return tokens[name]


def revoke_token(catalog_dir: Path, name: str, progress: Progress = print) -> None:
    require_catalog_dir(catalog_dir, create=False)
    with catalog_lock(catalog_dir, progress):
        tokens = load_tokens(catalog_dir) or {}
        if name not in tokens:
            raise GoldboxError(f"{tokens_path(catalog_dir)}: no token for {name!r} "
                               f"(known: {', '.join(sorted(tokens)) or 'none'})")
        del tokens[name]
        _save(catalog_dir, tokens)
