"""The compiled contract also deploys and runs on `npx hardhat node` (the other devnet)."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from eth_account import Account

from fedledger.chain.devnet import dev_private_keys, start_hardhat
from fedledger.chain.ledger import Ledger, TaskConfig, connect


@pytest.mark.skipif(shutil.which("npx") is None, reason="Node.js (npx) is not installed")
def test_deploy_and_submit_on_hardhat_node(tmp_path):
    keys = [Account.from_key(k) for k in dev_private_keys(3)]
    with start_hardhat(log_path=tmp_path / "hardhat.log") as dn:
        assert dn.chain_id == 31337
        led = Ledger.deploy(connect(dn.url), keys[0], tmp_path / "deployments")
        assert (tmp_path / "deployments" / "31337.json").exists()
        h = "0x" + hashlib.sha256(b"m").hexdigest()
        cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        tid = led.create_task(
            TaskConfig(h, cid, cid, min_updates=1, max_updates=3, quorum=1, max_samples=1000)
        )
        led.add_contributor(tid, keys[1].address)
        uid = led.with_account(keys[1]).submit_update(tid, 0, h, cid, 10)
        assert uid == 1 and led.get_task(tid)["updateCount"] == 1
        assert led.get_update_digest(uid) == led.update_digest(tid, 0, keys[1].address, h, cid, 10)
