"""Read tokens for a private catalog, one per teammate, so revoking one leaves the others
working. They live in `<catalog>/.goldbox-tokens.json`, mode 0600 (a dot file: never
served). nginx checks them (see serve.py); adding or revoking one re-renders the site
and reloads a running `invoke catalog-serve`.

The tokens are stored as they are, not hashed: stock nginx (Debian's build has no perl
or njs module) cannot hash a request header, and its `map` compares strings, so the
rendered site must hold them anyway; both files are readable by their owner only."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

from goldbox.catalog.layout import require_catalog_dir
from goldbox.catalog.store import Progress, catalog_lock, write_file_atomically
from goldbox.errors import GoldboxError

TOKENS_FILE = ".goldbox-tokens.json"
_TEAMMATE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,}$")


def tokens_path(catalog_dir: Path) -> Path:
    return catalog_dir / TOKENS_FILE


def load_tokens(catalog_dir: Path) -> dict[str, str] | None:
    """Teammate name -> token; None when the catalog is public (no token file)."""
    path = tokens_path(catalog_dir)
    if not path.exists():
        return None
    try:
        tokens = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GoldboxError(f"{path}: cannot read the catalog's tokens: {exc}") from None
    if not isinstance(tokens, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _TOKEN.match(v)
            for k, v in tokens.items()):
        raise GoldboxError(f"{path}: expected an object of teammate name -> token "
                           f"(32 or more of A-Z a-z 0-9 _ -)")
    return tokens


def _save(catalog_dir: Path, tokens: dict[str, str]) -> None:
    write_file_atomically(tokens_path(catalog_dir),
                          (json.dumps(tokens, indent=2, sort_keys=True) + "\n").encode(),
                          mode=0o600)


def add_token(catalog_dir: Path, name: str, progress: Progress = print) -> str:
    """A new read token for teammate `name`; makes the catalog private if it was not."""
    if not _TEAMMATE.match(name):
        raise GoldboxError(f"catalog-token add {name!r}: expected a teammate name of "
                           f"letters, digits, '.', '_', '@' or '-'")
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
