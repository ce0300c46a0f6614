"""Bounded JSON: the one way fedledger parses JSON that someone else wrote (one owner).

Every JSON document that arrives from the content store (safetensors headers, verdict files,
task specs), from a Kubo node or from a network client (request bodies, relayed updates) goes
through :func:`loads`, or through :func:`check` where a framework parses the bytes itself.

Why a parser of our own in front of :func:`json.loads`: CPython's decoder recurses once per
nesting level, and a dependency of web3 raises ``sys.getrecursionlimit()`` to 100 000, so 100 000
``[`` overflow the C stack and kill the process with SIGSEGV, which no ``except`` can catch.
Huge numbers cost quadratic CPU to convert and raise ``ValueError`` past Python's int digit limit;
a header of millions of tiny values costs seconds and gigabytes. So the limits below are checked
on the raw bytes *before* ``json.loads`` runs, at C speed (no Python loop per byte: a regex
replaces every string literal by ``""``, then ``bytes.translate`` keeps only the brackets, whose
running depth numpy sums; 16 MiB in well under a second):

* ``max_bytes`` — the document's size in UTF-8 bytes;
* ``max_depth`` — the deepest nesting of arrays and objects (``[]`` is depth 1, ``1`` depth 0);
* ``max_number_digits`` — the longest run of digits outside strings (an integer's digits, or a
  fraction's or an exponent's);
* ``max_items`` — the most values the document may hold (an upper bound from its commas and
  brackets; keys are not counted).

Why the scan is sound: ``json.loads`` reads left to right and stops at the first syntax error.
On the prefix it accepts, its strings are exactly the regex's (an unescaped ``"`` opens and
closes them, a backslash escapes the next character, and UTF-8 never hides an ASCII byte inside
a multi-byte character), so the depth the scan computes on that prefix is the depth the parser
reaches; past it the parser has already failed. The scan can only over-estimate.

Then :func:`loads` parses with duplicate keys and the non-JSON constants ``NaN``, ``Infinity``
and ``-Infinity`` refused unless asked. Every refusal is a :class:`~fedledger.errors.FormatError`
whose message names the document (``what``) and the limit it broke.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from fedledger.errors import FormatError

DEFAULT_MAX_DEPTH = 64
"""Deep enough for any document fedledger writes (the deepest, a task spec, nests 4 levels)."""
DEFAULT_MAX_NUMBER_DIGITS = 80
"""A uint256 (an on-chain id) has 78 decimal digits; nothing we read is longer."""

_NOT_BRACKETS = bytes(i for i in range(256) if i not in b"[]{}")
_STEPS = np.array([-1 if i in b"]}" else 1 for i in range(256)], dtype=np.int8)
_QUOTE = ord('"')
_DIGITS_AS_ZERO = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))


def check(
    data: bytes | bytearray | memoryview | str,
    *,
    what: str,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_number_digits: int = DEFAULT_MAX_NUMBER_DIGITS,
    max_items: int | None = None,
) -> None:
    """Raise FormatError if ``data`` breaks a limit; parse nothing (see the module docstring)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    _check(raw, what, max_bytes, max_depth, max_number_digits, max_items)


def loads(
    data: bytes | bytearray | memoryview | str,
    *,
    what: str,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_number_digits: int = DEFAULT_MAX_NUMBER_DIGITS,
    max_items: int | None = None,
    allow_duplicate_keys: bool = False,
    allow_constants: bool = False,
) -> Any:
    """``json.loads`` of untrusted UTF-8 JSON within the given limits, or FormatError.

    Bytes must be UTF-8 (``json.loads`` would also guess UTF-16 and UTF-32, whose bytes the
    bounds scan cannot read). A duplicate key and ``NaN``/``Infinity`` are refused unless
    allowed.
    """
    text = data if isinstance(data, str) else None
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    _check(raw, what, max_bytes, max_depth, max_number_digits, max_items)
    try:
        if text is None:
            text = raw.decode("utf-8")
        return json.loads(
            text,
            object_pairs_hook=None if allow_duplicate_keys else _no_duplicates(what),
            parse_constant=None if allow_constants else _no_constant(what),
        )
    except FormatError:
        raise
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"{what} is not UTF-8 text: {exc.reason} at byte {exc.start}", hint=_BAD
        ) from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise FormatError(f"{what} is not valid JSON: {_short(str(exc))}", hint=_BAD) from exc


_HINT = "refused before parsing; whoever sent it must send a document within the limits"
_BAD = "whoever sent it must send valid JSON (RFC 8259, UTF-8)"


def _check(
    raw: bytes,
    what: str,
    max_bytes: int,
    max_depth: int,
    max_number_digits: int,
    max_items: int | None,
) -> None:
    if len(raw) > max_bytes:
        raise FormatError(
            f"{what} is {len(raw)} bytes, over the {max_bytes}-byte limit", hint=_HINT
        )
    bare = _outside_strings(raw)
    brackets = bare.translate(None, _NOT_BRACKETS)
    opens = brackets.count(b"[") + brackets.count(b"{")
    if opens > max_depth:  # else no prefix can be deeper: no sum needed
        steps = _STEPS[np.frombuffer(brackets, dtype=np.uint8)]
        wide = np.int32 if len(brackets) < 2**31 else np.int64  # (int64 sums int8 slowly)
        depth = int(np.cumsum(steps, dtype=wide).max())
        if depth > max_depth:
            raise FormatError(
                f"{what} nests deeper than the {max_depth}-level limit ({depth} levels)",
                hint=_HINT,
            )
    if b"0" * (max_number_digits + 1) in bare.translate(_DIGITS_AS_ZERO):
        raise FormatError(
            f"{what} holds a number longer than the {max_number_digits}-digit limit", hint=_HINT
        )
    if max_items is not None:
        items = 1 + bare.count(b",") + opens
        if items > max_items:
            raise FormatError(
                f"{what} holds up to {items} values, over the {max_items}-value limit",
                hint=_HINT,
            )


def _outside_strings(raw: bytes) -> bytes:
    """The bytes of ``raw`` that lie outside JSON string literals (strings hold no structure).

    Inside a valid string a backslash always starts an escape, so deleting every ``\\\\``
    pair and then every ``\\"`` (left to right, as the parser reads them) deletes escapes and
    nothing else: every ``"`` left delimits a string, and delimiters alternate open, close. Two
    C-speed replaces and a few numpy passes, whatever the input."""
    if b'"' not in raw:
        return raw
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    codes = np.frombuffer(raw, dtype=np.uint8)
    quote = codes == _QUOTE
    inside = np.bitwise_xor.accumulate(quote.view(np.uint8))  # 1 from an opening quote on
    return codes[(inside == 0) & ~quote].tobytes()


def _no_duplicates(what: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise FormatError(f"duplicate key {_short(repr(key))} in {what}", hint=_BAD)
                seen.add(key)
        return out

    return hook


def _no_constant(what: str) -> Any:
    def hook(token: str) -> Any:
        raise FormatError(f"{what} holds a non-JSON number {token}", hint=_BAD)

    return hook


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
