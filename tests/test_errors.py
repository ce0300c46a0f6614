"""One exception hierarchy, one table: every error fedledger raises on purpose derives from
FedledgerError, and README's table of exit codes and HTTP statuses lists each, as the classes say."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fedledger.flows.relay
import fedledger.learning.privacy
import fedledger.protocol.committee
import fedledger.protocol.fixedpoint
import fedledger_backend.indexer
import fedledger_backend.relay_journal
import fedledger_backend.relay_service
from fedledger.errors import FedledgerError

README = Path(__file__).resolve().parents[1] / "README.md"
MODULES = (
    fedledger.flows.relay,
    fedledger.learning.privacy,
    fedledger.protocol.committee,
    fedledger.protocol.fixedpoint,
    fedledger_backend.indexer,
    fedledger_backend.relay_journal,
    fedledger_backend.relay_service,
)  # where errors outside fedledger.errors live


def _all(cls: type[FedledgerError]) -> Iterator[type[FedledgerError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _all(sub)


def test_every_error_is_in_the_readme_table_with_its_exit_code_and_status() -> None:
    text = README.read_text()
    for cls in {FedledgerError, *_all(FedledgerError)}:
        if cls.__module__.startswith("tests"):
            continue
        row = f"| `{cls.__name__}` |"
        line = next((ln for ln in text.splitlines() if ln.startswith(row)), None)
        assert line is not None, f"README's error table lacks {cls.__name__}"
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[-2:] == [str(cls.exit_code), str(cls.http_status)], line


def test_no_error_class_outside_the_hierarchy() -> None:
    for mod in MODULES:
        for name, obj in vars(mod).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, Exception)
                and obj.__module__ == mod.__name__
            ):
                assert issubclass(obj, FedledgerError), f"{mod.__name__}.{name}"
