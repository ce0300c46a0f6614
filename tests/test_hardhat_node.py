"""The compiled contract also deploys and runs on `npx hardhat node` (the other devnet)."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from eth_account import Account

from fedledger.chain.devnet import dev_private_keys, start_hardhat
from fedledger.chain.ledger import Ledger, TaskConfig, connect
from fedledger.content.cid import compute_cid


@pytest.mark.skipif(shutil.which("npx") is None, reason="Node.js (npx) is not installed")
def test_deploy_and_submit_on_hardhat_node(tmp_path):
    keys = [Account.from_key(k) for k in dev_private_keys(3)]
    with start_hardhat(log_path=tmp_path / "hardhat.log") as dn:
        assert dn.chain_id == 31337
        led = Ledger.deploy(connect(dn.url), keys[0], tmp_path / "deployments")
        assert (tmp_path / "deployments" / "31337.json").exists()
        h = "0x" + hashlib.sha256(b"m").hexdigest()
        cid = compute_cid(b"m")
        tid = led.create_task(
            TaskConfig(h, cid, cid, min_updates=1, max_updates=3, quorum=1, max_samples=1000)
        )
        led.add_contributor(tid, keys[1].address)
        uid = led.with_account(keys[1]).submit_update(tid, 0, h, cid, 10)
        assert uid == (tid << 32) | 1 and led.get_task(tid)["updateCount"] == 1
        (rec,) = led.update_records(tid, 0)
        assert (rec.contributor, rec.content_hash, rec.cid, rec.num_samples) == (
            keys[1].address, h, cid, 10,
        )  # fmt: skip
