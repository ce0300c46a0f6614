"""Key files on disk: the names a keystore file may have, and the one way to write one.

Both the account keystores (:mod:`fedledger.chain.keys`) and the committee keys
(:mod:`fedledger.protocol.committee_keys`) keep one encrypted JSON file per key; a name is the
file's stem, so it is bounded and path-free, and a file is written owner-only, synced, and
renamed into place so a crash never leaves half a key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fedledger.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A key's name: 1-64 letters, digits, ``_``, ``.``, ``-``, starting with a letter or digit."""


def check_name(name: str) -> None:
    """ConfigError unless ``name`` is a valid key name (:data:`NAME`)."""
    if not NAME.match(name):
        raise ConfigError(
            f"invalid key name {name!r}",
            hint="use 1-64 letters, digits, '_', '.', '-', starting with a letter or digit",
        )


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (directory 0700, file 0600),
    synced, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
