"""Shared fixtures: a real anvil devnet, the real compiled contract, the real embedded store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from fedledger.chain.devnet import Devnet, dev_private_keys, start_anvil
from fedledger.chain.ledger import Ledger, connect
from fedledger.content.store import ContentStore, open_store


@pytest.fixture
def anvil() -> Iterator[Devnet]:
    with start_anvil(accounts=20) as dn:
        yield dn


@pytest.fixture(scope="session")
def dev_accounts() -> list[LocalAccount]:
    return [Account.from_key(k) for k in dev_private_keys(20)]


@pytest.fixture
def ledger(anvil: Devnet, dev_accounts: list[LocalAccount], tmp_path: Path) -> Ledger:
    """TrainingLedger freshly deployed by account 0 (the task owner in tests)."""
    return Ledger.deploy(connect(anvil.url), dev_accounts[0], tmp_path / "deployments")


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return open_store(None, tmp_path / "home")
