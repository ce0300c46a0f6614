"""Structured logs: one JSON object per line, with the ``extra={...}`` fields of each call.

Secrets never reach a log: callers pass addresses, ids, CIDs and hashes, never keys or
passwords, and :class:`JsonFormatter` drops any field whose name suggests a secret.
"""

from __future__ import annotations

import json
import logging
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SECRET_WORDS = ("password", "secret", "private", "key_hex", "mnemonic")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k in _STANDARD or k.startswith("_"):
                continue
            if any(w in k.lower() for w in _SECRET_WORDS):
                continue
            doc[k] = v
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Route fedledger's loggers to stderr as JSON lines (or plain text)."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger("fedledger")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
