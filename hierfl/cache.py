"""The user's hierfl folder: remembered FLOP counts and the key that vouches for them.

The folder is ``$HIERFL_CACHE_DIR``, else ``$XDG_CACHE_HOME/hierfl``, else ``~/.cache/hierfl``.
Its ``key`` (32 random bytes, readable by the user alone) signs what hierfl itself wrote:
checkpoints, so that resuming one proves it came from this account's own command line,
and cached FLOP counts, so that an edited count is recomputed instead of believed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_BYTES = 32


def cache_dir() -> Path:
    """The user's hierfl folder (it may not exist yet)."""
    explicit = os.environ.get("HIERFL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hierfl"


def user_key() -> bytes | None:
    """This account's signing key, created on first use; None where the folder is unwritable."""
    path = cache_dir() / "key"
    try:
        found = path.read_bytes()
    except FileNotFoundError:
        found = _create_key(path)
    except OSError:
        return None
    return found if found is not None and len(found) == KEY_BYTES else None


def _create_key(path: Path) -> bytes | None:
    """Write a fresh key beside ``path`` and link it into place: two processes agree on one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".key.{secrets.token_hex(8)}")
        handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(handle, "wb") as file:
            file.write(secrets.token_bytes(KEY_BYTES))
        try:
            os.link(temp, path)  # fails if another process made one first: use theirs
        except FileExistsError:
            pass
        finally:
            temp.unlink()
        return path.read_bytes()
    except OSError:
        return None


def sign(data: bytes, key: bytes | None) -> bytes:
    """HMAC-SHA256 of ``data`` under ``key`` (32 zero bytes without a key)."""
    if key is None:
        return bytes(KEY_BYTES)
    return hmac.new(key, data, hashlib.sha256).digest()


def verify(data: bytes, mac: bytes, key: bytes | None) -> bool:
    """True when ``mac`` is ``data``'s HMAC under ``key`` (never without a key)."""
    return key is not None and hmac.compare_digest(sign(data, key), mac)
