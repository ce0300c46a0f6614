"""What of a local error may be shown to strangers: no local paths, no endpoint URLs, bounded.

A verdict reason is published in the round's verdict file (on IPFS, attested on chain) and
served over REST; an API error goes to whoever asked. Neither may carry the node's own layout:
its data directory, the block directory of its store, the URL of its Kubo node (which may hold
credentials). The code that raises keeps those facts for the node's own logs; this module is the
general guard at the points where text leaves the node, for anything that escaped.

The guard is deterministic (the same text gives the same result on every machine), so two
validators that met the same failure still publish the same bytes.
"""

from __future__ import annotations

import re

MAX_PUBLIC_CHARS = 500
"""Longest public reason: a verdict file holds one per update, and exception text may echo
attacker-chosen input of any size."""

LOCAL_PATH = "<local path>"
LOCAL_URL = "<local url>"

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{},]+")
# An absolute path starts a word (after a space, a quote, a bracket, '=' or the text's start):
# POSIX ``/x``, home ``~/x``, Windows ``C:\x`` or ``C:/x``, UNC ``\\host\x``.
_PATH = re.compile(r"(?:(?<=[\s'\"(\[{=:,])|^)(?:~?/|[A-Za-z]:[\\/]|\\\\)[^\s'\"<>()\[\]{},]+")


def public_text(text: str, limit: int = MAX_PUBLIC_CHARS) -> str:
    """``text`` with URLs and absolute filesystem paths replaced by placeholders and cut to
    ``limit`` characters ("..." marks the cut)."""
    out = _URL.sub(LOCAL_URL, str(text))
    out = _PATH.sub(LOCAL_PATH, out)
    if len(out) > limit:
        out = out[: limit - 3] + "..."
    return out


def public_reason(exc: BaseException, limit: int = MAX_PUBLIC_CHARS) -> str:
    """A public one-line description of ``exc``: its own text for fedledger's errors (they
    are written to be read), the type and text for anything else; always through
    :func:`public_text`."""
    from fedledger.errors import FedledgerError

    if isinstance(exc, FedledgerError):
        text = str(exc)
    else:
        detail = str(exc)
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return public_text(" ".join(text.split()), limit)


__all__ = ["LOCAL_PATH", "LOCAL_URL", "MAX_PUBLIC_CHARS", "public_reason", "public_text"]
