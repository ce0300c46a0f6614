"""A task that requires client-level DP, end to end on a real devnet, the compiled contract, the
embedded store and a validator backend: the SDK applies the task's DP by itself; validators judge
DP updates against the DP norm band instead of the screens a noised update fails by design;
updates without the declared noise, declaring weaker DP or unclipped are rejected with reasons;
each update's ε is on record (REST); the budget is enforced before anything is sent."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pipeline_kit import backend_for, make_scenario

from fedledger.flows.contribute import ContributorOptions, make_update
from fedledger.learning.privacy import PrivacyAccountant, PrivacyBudgetExceeded, epsilon
from fedledger.protocol import codec
from fedledger.protocol.privacy_policy import DPPolicy, dp_norm_band
from fedledger_backend.db import ContributionRow

DP = {"clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1e-5}


def test_the_norm_band_holds_honest_dp_updates_and_nothing_else() -> None:
    dp = DPPolicy(**DP)
    d = 4810
    low, high = dp_norm_band(dp, d)
    rng = np.random.default_rng(0)
    for _ in range(200):  # clipped signal of any norm <= C, plus the noise
        signal = rng.normal(size=d)
        signal *= rng.uniform(0, 1) / np.linalg.norm(signal)
        noised = signal + rng.normal(scale=dp.noise_multiplier * dp.clip_norm, size=d)
        assert low <= float(np.linalg.norm(noised)) <= high
    assert high < 2 * low  # narrow: boosting or dropping the noise leaves it
    assert low > 10 * dp.clip_norm  # an unnoised update (norm <= C) is far below it


def _judged(backend) -> dict[int, ContributionRow]:
    with backend.db.session() as s:
        return {r.update_id: r for r in s.query(ContributionRow).all()}


def test_a_dp_task_round_judges_by_the_band_and_records_epsilon(
    ledger, store, dev_accounts, tmp_path: Path
) -> None:
    sc = make_scenario(
        ledger,
        store,
        dev_accounts,
        n_contributors=7,
        rule={"rule": "fedavg"},
        privacy={"dp": DP},
    )
    st = sc.state()
    honest = {}
    for i in range(4):  # the SDK applies the task's DP: no DP option given
        data, n = sc.honest_update(i)
        meta = codec.decode(data, kind="update").metadata
        assert float(meta["fedledger.dp.noise_multiplier"]) == 1.0
        honest[i] = sc.submit_bytes(i, data, n)
    glob = codec.decode(store.get(st.global_cid)).tensors
    rng = np.random.default_rng(1)
    small = {k: (rng.normal(size=v.shape) * 1e-3).astype(np.float32) for k, v in glob.items()}
    dp_claim = {
        "fedledger.dp.clip": "1.0",
        "fedledger.dp.noise_multiplier": "1.0",
        "fedledger.dp.delta": "1e-05",
        "fedledger.dp.epsilon": "1.0",
    }

    def enc(i: int, tensors, extra) -> bytes:
        return codec.encode_update(
            tensors,
            task_id=sc.task_id,
            round=0,
            base_hash=st.global_hash,
            contributor=sc.contributors[i].address,
            extra=extra,
        )

    no_noise = sc.submit_bytes(4, enc(4, small, dp_claim), 100)  # claims DP, adds no noise
    undeclared = sc.submit_bytes(5, enc(5, small, {}), 100)  # declares no DP at all
    boosted_data, n = sc.honest_update(6)
    dec = codec.decode(boosted_data, kind="update")
    boosted = {k: v * 20 for k, v in dec.tensors.items()}
    dp_meta = {k: v for k, v in dec.metadata.items() if k.startswith("fedledger.dp.")}
    unclipped = sc.submit_bytes(6, enc(6, boosted, dp_meta), n)

    backend = backend_for(sc, sc.validators[0], tmp_path / "v.db")
    for _ in range(20):
        backend.run_pass()
        if ledger.current_round(sc.task_id) > 0:
            backend.run_pass()
            break
    rows = _judged(backend)
    for uid in honest.values():
        assert rows[uid].status == "ACCEPTED", rows[uid].reason
    assert rows[no_noise].status == "NORM_BOUND"
    assert "noise is missing" in rows[no_noise].reason
    assert rows[undeclared].status == "MALFORMED"
    assert "requires client-level DP" in rows[undeclared].reason
    assert rows[unclipped].status == "NORM_BOUND"
    assert "not clipped" in rows[unclipped].reason
    one = epsilon(1, 1.0, 1e-5)
    for r in rows.values():  # every update is a release: each has its epsilon on record
        assert r.dp_epsilon is not None and math.isclose(r.dp_epsilon, one, rel_tol=1e-9)


def test_the_budget_is_enforced_before_anything_is_sent(ledger, store, dev_accounts, tmp_path):
    sc = make_scenario(
        ledger,
        store,
        dev_accounts,
        n_contributors=2,
        rule={"rule": "fedavg"},
        privacy={"dp": {**DP, "epsilon_budget": epsilon(1, 1.0, 1e-5) * 1.1}},
    )
    acct = PrivacyAccountant(tmp_path / "acct.json")
    led = sc.as_(sc.contributors[0])
    opts = ContributorOptions(seed=1, accountant=acct)
    work = make_update(
        led, store, sc.task_id, sc.local(0), opts, contributor=sc.contributors[0].address
    )
    assert work.epsilon == pytest.approx(epsilon(1, 1.0, 1e-5))
    with pytest.raises(PrivacyBudgetExceeded, match="budget"):
        make_update(
            led, store, sc.task_id, sc.local(0), opts, contributor=sc.contributors[0].address
        )
    assert acct.epsilon(sc.task_id, 1e-5) == pytest.approx(epsilon(1, 1.0, 1e-5))  # not spent
