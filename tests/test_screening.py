"""fedledger.protocol.screening: one verdict per update, each check in isolation, and attack detection."""

from __future__ import annotations

import numpy as np
import pytest

from fedledger.errors import ConfigError
from fedledger.protocol import aggregation as A
from fedledger.protocol.screening import Candidate, ScreeningSpec, accepted_ids, screen
from fedledger.protocol.verdicts import Verdict

MODEL = {"w": np.zeros((8, 16), np.float32), "b": np.zeros(16, np.float32)}
MEDIAN = A.RuleSpec(rule="median")


def _honest(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Updates sharing a common direction plus individual noise, like IID-ish clients."""
    rng = np.random.default_rng(seed)
    common = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in MODEL.items()}
    return [
        {
            k: (common[k] + 0.5 * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in MODEL.items()
        }
        for _ in range(n)
    ]


def _cands(deltas: list, **early: tuple[Verdict, str]) -> list[Candidate]:
    return [
        Candidate(i + 1, "0x" + f"{i + 1:040x}", "0x" + f"{i + 1:064x}", d)
        for i, d in enumerate(deltas)
    ]


def _verdicts(
    deltas: list, rule: A.RuleSpec = MEDIAN, spec: ScreeningSpec | None = None
) -> list[Verdict]:
    return [d.verdict for d in screen(_cands(deltas), MODEL, rule, spec)]


def test_honest_updates_are_all_accepted() -> None:
    assert set(_verdicts(_honest(8))) == {Verdict.ACCEPTED}


def test_one_decision_per_update_in_update_id_order() -> None:
    cands = list(reversed(_cands(_honest(6))))
    assert [d.update_id for d in screen(cands, MODEL, MEDIAN)] == [1, 2, 3, 4, 5, 6]


def test_early_verdict_is_kept_with_its_reason() -> None:
    cands = _cands(_honest(5))
    cands[2] = Candidate(
        3, cands[2].contributor, cands[2].content_hash, None, Verdict.LATE, "after deadline"
    )
    d = screen(cands, MODEL, MEDIAN)[2]
    assert (d.verdict, d.reason) == (Verdict.LATE, "after deadline")


def test_wrong_shape_is_shape_mismatch() -> None:
    deltas = _honest(5)
    deltas[1] = {"w": np.zeros((8, 15), np.float32), "b": deltas[1]["b"]}
    assert _verdicts(deltas)[1] == Verdict.SHAPE_MISMATCH


def test_missing_tensor_is_shape_mismatch() -> None:
    deltas = _honest(5)
    deltas[1] = {"w": deltas[1]["w"]}
    assert _verdicts(deltas)[1] == Verdict.SHAPE_MISMATCH


def test_nan_is_non_finite() -> None:
    deltas = _honest(5)
    deltas[0]["b"][3] = np.inf
    assert _verdicts(deltas)[0] == Verdict.NON_FINITE


def test_all_zero_delta_is_free_rider() -> None:
    deltas = _honest(5)
    deltas[4] = {k: np.zeros_like(v) for k, v in MODEL.items()}
    assert _verdicts(deltas)[4] == Verdict.FREE_RIDER


def test_same_content_hash_as_earlier_update_is_duplicate() -> None:
    cands = _cands(_honest(5))
    cands[3] = Candidate(4, cands[3].contributor, cands[1].content_hash, cands[1].delta)
    assert screen(cands, MODEL, MEDIAN)[3].verdict == Verdict.DUPLICATE


def test_rescaled_copy_of_earlier_update_is_duplicate() -> None:
    deltas = _honest(5)
    deltas[4] = {k: v * 1.1 for k, v in deltas[0].items()}
    out = _verdicts(deltas)
    assert out[0] == Verdict.ACCEPTED and out[4] == Verdict.DUPLICATE


def test_boosted_update_exceeds_the_relative_norm_bound() -> None:
    deltas = _honest(8)
    deltas[2] = {k: v * 10 for k, v in deltas[2].items()}
    assert _verdicts(deltas)[2] == Verdict.NORM_BOUND


def test_absolute_norm_bound_applies_to_every_update() -> None:
    assert set(_verdicts(_honest(5), spec=ScreeningSpec(norm_bound=1e-3))) == {Verdict.NORM_BOUND}


@pytest.mark.parametrize("rule", [MEDIAN, A.RuleSpec(rule="krum", f=2)], ids=["median", "krum"])
def test_sign_flipped_update_is_outlier(rule: A.RuleSpec) -> None:
    deltas = _honest(8)
    deltas[5] = {k: -v for k, v in deltas[5].items()}
    assert _verdicts(deltas, rule)[5] == Verdict.OUTLIER


def test_sign_flips_from_40_percent_of_the_round_are_all_outliers() -> None:
    deltas = _honest(10, seed=5)
    for i in (6, 7, 8, 9):
        deltas[i] = {k: -v for k, v in deltas[i].items()}
    out = _verdicts(deltas)
    assert out[:6] == [Verdict.ACCEPTED] * 6
    assert out[6:] == [Verdict.OUTLIER] * 4


def test_gaussian_noise_update_is_outlier() -> None:
    deltas = _honest(8)
    rng = np.random.default_rng(9)
    deltas[3] = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in MODEL.items()}
    d = screen(_cands(deltas), MODEL, MEDIAN)[3]
    assert d.verdict == Verdict.OUTLIER and "noise" in d.reason


def test_without_a_consensus_the_cosine_floor_rejects_nobody() -> None:
    """Updates with a zero sum (as honest non-IID updates near convergence): every one points
    against the sum of the others, so the floor would reject all of them; it is not applied."""
    model = {"w": np.zeros((64, 64), np.float32)}
    rng = np.random.default_rng(2)
    basis = np.linalg.qr(rng.standard_normal((4096, 6)))[0].T
    simplex = np.eye(6) - 1.0 / 6  # six vectors summing to zero, pairwise cosine -0.2
    deltas = [{"w": (row @ basis).reshape(64, 64).astype(np.float32)} for row in simplex]
    decisions = screen(_cands(deltas), model, MEDIAN)
    assert {d.verdict for d in decisions} == {Verdict.ACCEPTED}
    assert "no consensus" in decisions[0].reason


BIG = {"w": np.zeros((64, 64), np.float32)}


def _zero_sum(n: int, seed: int = 2) -> list[dict[str, np.ndarray]]:
    """``n`` updates summing to zero (pairwise cosine -1/(n-1)), in 4096 dimensions: honest
    non-IID updates at convergence, a round with no consensus."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((4096, n)))[0].T
    simplex = np.eye(n) - 1.0 / n
    return [{"w": (row @ basis).reshape(64, 64).astype(np.float32)} for row in simplex]


def _addr(i: int) -> str:
    return "0x" + f"{i:040x}"


def test_standing_moves_towards_the_rounds_cosine_and_is_reported() -> None:
    deltas = _honest(8)
    decisions = screen(_cands(deltas), MODEL, MEDIAN, standing={_addr(1): 0.2})
    d1, d2 = decisions[0], decisions[1]
    assert d1.standing is not None and d2.standing is not None
    # Contributor 2 has no history: its standing is this round's cosine; contributor 1's moved
    # from 0.2 towards its cosine, by at most (1 - standing_decay).
    assert 0.2 < d1.standing < d2.standing + 0.3
    assert all(d.verdict == Verdict.ACCEPTED for d in decisions)


def test_a_contributor_in_bad_standing_is_an_outlier_even_when_this_round_looks_harmless() -> None:
    """A round without a consensus judges nobody by its cosines, but a contributor whose
    history is against the consensus stays rejected; the others are accepted."""
    deltas = _zero_sum(6)
    standing = {_addr(i + 1): 0.3 for i in range(6)}
    standing[_addr(4)] = -0.4
    decisions = screen(_cands(deltas), BIG, MEDIAN, standing=standing)
    verdicts = [d.verdict for d in decisions]
    assert verdicts == [Verdict.ACCEPTED] * 3 + [Verdict.OUTLIER] + [Verdict.ACCEPTED] * 2
    assert "standing -0.4" in decisions[3].reason
    # no consensus: nobody's standing moves
    assert [d.standing for d in decisions] == [standing[_addr(i + 1)] for i in range(6)]


def test_a_group_in_bad_standing_cannot_become_the_consensus() -> None:
    """Three honest updates with little in common (cosine 0.1) and a coherent group of three
    (cosine 0.99) opposed to them, ranked first (as when the median is dragged its way): the
    group forms the consensus unless its members' standing excludes them."""
    from fedledger.protocol.screening import consensus_cosines

    n = 6
    cos = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    for i in range(n):
        for j in range(n):
            if i != j:
                same = (i < 3) == (j < 3)
                cos[i][j] = (0.1 if i < 3 else 0.99) if same else -0.3
    first = [0.1, 0.1, 0.1, 0.9, 0.9, 0.9]
    captured = consensus_cosines(cos, first)
    assert all(c < 0 for c in captured[:3]) and all(c > 0 for c in captured[3:])
    honest = consensus_cosines(cos, first, [True, True, True, False, False, False])
    assert all(c > 0 for c in honest[:3]) and all(c < 0 for c in honest[3:])


def test_next_standing_keeps_contributors_absent_from_the_round() -> None:
    from fedledger.protocol.screening import next_standing

    decisions = screen(_cands(_honest(5)), MODEL, MEDIAN, standing={_addr(9): -0.2})
    after = next_standing({_addr(9): -0.2}, decisions, {i + 1: _addr(i + 1) for i in range(5)})
    assert after[_addr(9)] == -0.2
    assert set(after) == {_addr(i) for i in (1, 2, 3, 4, 5, 9)}


def test_in_a_round_too_small_to_compare_a_bad_standing_still_counts() -> None:
    deltas = _honest(3)
    history = {_addr(1): 0.4, _addr(2): -0.5}
    decisions = screen(_cands(deltas), MODEL, MEDIAN, standing=history)
    assert [d.verdict for d in decisions] == [Verdict.ACCEPTED, Verdict.OUTLIER, Verdict.ACCEPTED]
    assert "standing -0.5" in decisions[1].reason
    assert [d.standing for d in decisions] == [0.4, -0.5, None]  # nothing moves in such a round


def test_too_few_updates_are_not_compared_as_outliers_but_pass_the_norm_bounds() -> None:
    deltas = _honest(3)
    deltas[2] = {k: -v for k, v in deltas[2].items()}  # a flip keeps its norm
    decisions = screen(_cands(deltas), MODEL, MEDIAN)
    assert {d.verdict for d in decisions} == {Verdict.ACCEPTED}
    assert all("within the norm bounds" in d.reason for d in decisions)


def _scaled(delta: dict[str, np.ndarray], factor: float) -> dict[str, np.ndarray]:
    return {k: (v * factor).astype(np.float32) for k, v in delta.items()}


def _norm(delta: dict[str, np.ndarray]) -> float:
    return A.norm(A.flatten(delta, A.TensorLayout.of(MODEL))[0])


def test_a_boosted_update_in_a_round_of_three_is_norm_bound() -> None:
    deltas = _honest(3)
    deltas[1] = _scaled(deltas[1], 1000.0)
    assert _verdicts(deltas) == [Verdict.ACCEPTED, Verdict.NORM_BOUND, Verdict.ACCEPTED]


def test_in_a_round_of_two_the_norm_history_bounds_a_boosted_update() -> None:
    """The median of two updates is pulled up by a boosted one, so only the earlier rounds'
    accepted norms can bound it."""
    deltas = _honest(2)
    history = [_norm(deltas[0])] * 3
    deltas[1] = _scaled(deltas[1], 50.0)
    assert _verdicts(deltas) == [Verdict.ACCEPTED, Verdict.ACCEPTED]  # the round alone: blind
    decisions = screen(_cands(deltas), MODEL, MEDIAN, norm_history=history)
    assert [d.verdict for d in decisions] == [Verdict.ACCEPTED, Verdict.NORM_BOUND]
    assert "median accepted norm of the last 3 rounds" in decisions[1].reason


def test_a_round_of_one_update_is_bounded_by_the_norm_history() -> None:
    (delta,) = _honest(1)
    history = [_norm(delta)]
    ok = screen(_cands([_scaled(delta, 2.0)]), MODEL, MEDIAN, norm_history=history)
    boosted = screen(_cands([_scaled(delta, 10.0)]), MODEL, MEDIAN, norm_history=history)
    assert (ok[0].verdict, boosted[0].verdict) == (Verdict.ACCEPTED, Verdict.NORM_BOUND)


def test_the_absolute_norm_bound_applies_to_a_round_of_one_update() -> None:
    (delta,) = _honest(1)
    spec = ScreeningSpec(norm_bound=_norm(delta) / 2)
    assert _verdicts([delta], spec=spec) == [Verdict.NORM_BOUND]


def test_the_absolute_and_the_relative_norm_bounds_apply_together() -> None:
    deltas = _honest(8)
    deltas[2] = _scaled(deltas[2], 10.0)
    loose = ScreeningSpec(norm_bound=1e6, norm_multiple=3.0)
    assert _verdicts(deltas, spec=loose)[2] == Verdict.NORM_BOUND  # the relative one decides
    tight = ScreeningSpec(norm_bound=1e-3, norm_multiple=3.0)
    assert set(_verdicts(deltas, spec=tight)) == {Verdict.NORM_BOUND}  # the absolute one


def test_a_null_norm_multiple_turns_the_relative_bounds_off() -> None:
    deltas = _honest(5)
    deltas[2] = _scaled(deltas[2], 10.0)
    spec = ScreeningSpec(norm_multiple=None, min_cosine=None, outlier_k=1e9)
    decisions = screen(_cands(deltas), MODEL, MEDIAN, spec, norm_history=[1e-3])
    assert decisions[2].verdict != Verdict.NORM_BOUND


def test_the_norm_history_keeps_each_rounds_median_accepted_norm() -> None:
    from fedledger.protocol.screening import next_norm_history
    from fedledger.protocol.verdicts import canonical_float

    spec = ScreeningSpec(norm_history=3)
    decisions = screen(_cands(_honest(5)), MODEL, MEDIAN, spec)
    median = canonical_float(sorted(d.norm for d in decisions if d.norm is not None)[2])
    assert next_norm_history([1.0, 2.0, 3.0], decisions, spec) == [2.0, 3.0, median]
    rejected = screen(_cands(_honest(2)), MODEL, MEDIAN, ScreeningSpec(norm_bound=1e-6))
    assert next_norm_history([1.0], rejected, spec) == [1.0]  # nothing accepted: unchanged
    assert next_norm_history([1.0], decisions, ScreeningSpec(norm_history=0)) is None


def test_screening_is_deterministic() -> None:
    deltas = _honest(9, seed=3)
    deltas[1] = {k: -v for k, v in deltas[1].items()}
    assert screen(_cands(deltas), MODEL, MEDIAN) == screen(_cands(deltas), MODEL, MEDIAN)


def test_accepted_ids_are_in_update_id_order() -> None:
    deltas = _honest(6)
    deltas[0] = {k: np.zeros_like(v) for k, v in MODEL.items()}
    assert accepted_ids(screen(_cands(deltas), MODEL, MEDIAN)) == [2, 3, 4, 5, 6]


def test_bad_screening_spec_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="outlier_k"):
        ScreeningSpec.parse({"outlier_k": -1})


def test_screening_spec_reads_the_screening_section_of_a_task_spec() -> None:
    assert ScreeningSpec.parse({"screening": {"norm_bound": 2.0}}).norm_bound == 2.0


# ------------------------------------------------------------------ real non-IID experiment


def _digits_rounds(attack: str, seed: int, n_rounds: int = 5):  # type: ignore[no-untyped-def]
    """10 clients, Dirichlet(0.5) label split of load_digits, a 64-32-10 MLP, 3 attackers."""
    import torch
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    data = load_digits()
    X = torch.from_numpy((data.data / 16.0).astype(np.float32))
    y = torch.from_numpy(data.target.astype(np.int64))
    parts: list[list[int]] = [[] for _ in range(10)]
    for c in range(10):
        ids = rng.permutation(np.where(data.target == c)[0])
        cuts = (np.cumsum(rng.dirichlet([0.5] * 10)) * len(ids)).astype(int)[:-1]
        for k, p in enumerate(np.split(ids, cuts)):
            parts[k].extend(p.tolist())
    bad = set(rng.choice(10, 3, replace=False).tolist())
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    glob = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    for r in range(n_rounds):
        deltas = []
        for k in range(10):
            net.load_state_dict({n: torch.from_numpy(v.copy()) for n, v in glob.items()})
            opt = torch.optim.SGD(net.parameters(), lr=0.1)
            g = torch.Generator().manual_seed(seed * 1000 + r * 10 + k)
            idx = torch.tensor(parts[k])
            for _ in range(5):
                perm = idx[torch.randperm(len(idx), generator=g)]
                for s in range(0, len(perm), 32):
                    b = perm[s : s + 32]
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(net(X[b]), y[b]).backward()
                    opt.step()
            d = {
                n: (v.detach().numpy() - glob[n]).astype(np.float32)
                for n, v in net.state_dict().items()
            }
            if k in bad:
                d = {n: v * (-1.0 if attack == "sign_flip" else 10.0) for n, v in d.items()}
            deltas.append(d)
        yield r, glob, deltas, [k in bad for k in range(10)]
        honest = [d for d, b in zip(deltas, [k in bad for k in range(10)], strict=True) if not b]
        glob = {
            n: glob[n] + np.mean([h[n] for h in honest], axis=0).astype(np.float32) for n in glob
        }


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["sign_flip", "scaling"])
def test_attackers_at_30_percent_are_rejected_on_non_iid_digits(attack: str) -> None:
    hits = misses = false_rejects = honest = 0
    for seed in range(2):
        for _, glob, deltas, bad in _digits_rounds(attack, seed):
            for d, is_bad in zip(screen(_cands(deltas), glob, MEDIAN), bad, strict=True):
                rejected = d.verdict != Verdict.ACCEPTED
                hits += is_bad and rejected
                misses += is_bad and not rejected
                false_rejects += (not is_bad) and rejected
                honest += not is_bad
    assert hits / (hits + misses) >= 0.9
    assert false_rejects / honest <= 0.05


def test_judging_a_later_round_needs_the_previous_rounds_verdict_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The standing carries over from round r - 1's verdict file, so judge_round refuses to
    judge round r > 0 without it, or with another round's file."""
    from fedledger.content.blockstore import Blockstore
    from fedledger.protocol import codec
    from fedledger.protocol.rounds import UpdateRef, judge_round
    from fedledger.protocol.taskspec import TaskSpec

    store = Blockstore(tmp_path / "blocks")
    spec = TaskSpec(model="mlp_digits", dataset="digits", aggregation={"rule": "median"})
    from fedledger.learning.models import build_model, state_to_numpy

    model = state_to_numpy(build_model("mlp_digits", seed=0))

    def judge(rnd: int, previous):  # type: ignore[no-untyped-def]
        base = codec.encode_model(model, task_id=1, round=rnd)
        refs = []
        for i, d in enumerate(_honest_like(model, 5, seed=rnd)):
            f = codec.encode_update(
                d,
                task_id=1,
                round=rnd,
                base_hash=codec.sha256_hex(base),
                contributor=_addr(i + 1),
                encoding="fp32",
            )
            refs.append(
                UpdateRef(rnd * 5 + i + 1, _addr(i + 1), codec.sha256_hex(f), store.put(f), 10)
            )
        return judge_round(
            store, task_id=1, round_=rnd, spec=spec, base_model=base, updates=refs,
            max_samples=10, previous=previous,
        )  # fmt: skip

    first = judge(0, None)
    assert first.verdict_file.standing is not None
    assert set(first.verdict_file.standing) == {_addr(i + 1) for i in range(5)}
    with pytest.raises(ValueError, match="needs round 0's verdict file"):
        judge(1, None)
    with pytest.raises(ValueError, match="not task 1 round 1"):
        judge(2, first.verdict_file)
    second = judge(1, first.verdict_file)
    assert second.verdict_file.standing is not None
    # each standing moved from round 0's value towards round 1's cosine, by at most 30 %
    for who, was in first.verdict_file.standing.items():
        now = second.verdict_file.standing[who]
        assert now != was and abs(now - was) <= 0.3 * 2 + 1e-9


def _honest_like(model: dict[str, np.ndarray], n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    common = {k: rng.standard_normal(v.shape) for k, v in model.items()}
    return [
        {k: (0.01 * (common[k] + 0.5 * rng.standard_normal(v.shape))).astype(np.float32)
         for k, v in model.items()}
        for _ in range(n)
    ]  # fmt: skip


# --------------------------------------------------------------------------- defences (#20)


def _history(step: dict[str, np.ndarray] | None, own: dict[int, dict[str, np.ndarray]]):  # type: ignore[no-untyped-def]
    from fedledger.protocol.history import History, PreviousUpdate

    layout = A.TensorLayout.of(MODEL)
    flat = lambda d: np.array(A.flatten(d, layout)[0])  # noqa: E731
    return History(
        0,
        None if step is None else flat(step),
        {_addr(i): PreviousUpdate(100 + i, flat(d)) for i, d in own.items()},
    )


def _addr(i: int) -> str:
    return "0x" + f"{i:040x}"


def test_a_replay_of_the_last_global_step_is_stale_and_named() -> None:
    deltas = _honest(8, seed=3)
    step = {k: np.mean([d[k] for d in _honest(8, seed=4)], axis=0) for k in MODEL}
    deltas[6] = {k: v.copy() for k, v in step.items()}
    out = screen(_cands(deltas), MODEL, MEDIAN, history=_history(step, {}))
    assert out[6].verdict == Verdict.STALE and "global step" in out[6].reason
    assert [d.verdict for d in out if d.update_id != 7] == [Verdict.ACCEPTED] * 7


def test_an_honest_update_that_carried_the_last_step_is_not_stale() -> None:
    deltas = _honest(6, seed=3)
    step = {k: v * 1.0001 for k, v in deltas[2].items()}  # its own update was the whole step
    hist = _history(step, {3: deltas[2]})
    assert screen(_cands(deltas), MODEL, MEDIAN, history=hist)[2].verdict == Verdict.ACCEPTED


def test_three_updates_of_one_direction_are_all_sybils_a_pair_keeps_the_first() -> None:
    deltas = _honest(9, seed=6)
    for i, s in zip((6, 7, 8), (1.0, 1.1, 1.2), strict=True):
        deltas[i] = {k: v * s for k, v in deltas[5].items()}
    out = _verdicts(deltas)
    assert out[5:] == [Verdict.SYBIL] * 4
    assert out[:5] == [Verdict.ACCEPTED] * 5
    pair = _honest(6, seed=6)
    pair[5] = {k: v * 1.1 for k, v in pair[0].items()}
    assert _verdicts(pair)[0] == Verdict.ACCEPTED and _verdicts(pair)[5] == Verdict.DUPLICATE


def test_a_copy_with_five_percent_noise_is_a_duplicate() -> None:
    from fedledger.learning.attacks import copier

    deltas = _honest(7, seed=8)
    deltas[6] = copier(deltas[6], source=deltas[1], noise=0.05, seed=1)
    d = screen(_cands(deltas), MODEL, MEDIAN)[6]
    assert d.verdict == Verdict.DUPLICATE and "to update 2" in d.reason


def test_turning_against_ones_own_accepted_update_is_inconsistent() -> None:
    deltas = _honest(8, seed=2)
    before = {k: v.copy() for k, v in deltas[4].items()}
    deltas[4] = {k: -v for k, v in before.items()}
    hist = _history(None, {i + 1: d for i, d in enumerate(_honest(8, seed=2))})
    d = screen(_cands(deltas), MODEL, MEDIAN, history=hist)[4]
    assert d.verdict == Verdict.INCONSISTENT
    assert "cosine to its own accepted update 105 of round 0 -1.0000" in d.reason


def test_new_screening_fields_parse_and_turn_off() -> None:
    spec = ScreeningSpec.parse({"stale_cosine": None, "min_self_cosine": None, "sybil_group": 4})
    assert not spec.uses_history() and spec.sybil_group == 4
    with pytest.raises(ConfigError, match="sybil_group"):
        ScreeningSpec.parse({"sybil_group": 1})


def test_root_data_file_round_trips_and_is_checked_against_the_spec() -> None:
    from fedledger.errors import FormatError
    from fedledger.protocol import codec
    from fedledger.protocol.reference import RootDataRef, decode_root_data, encode_root_data

    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    data = encode_root_data(x, [0, 1, 1, 0])
    ref = RootDataRef(cid="bafkx", sha256=codec.sha256_hex(data)[2:], samples=4)
    root = decode_root_data(data, ref)
    assert np.array_equal(root.x, x) and root.y.tolist() == [0, 1, 1, 0]
    with pytest.raises(FormatError, match="samples"):
        decode_root_data(data, ref.model_copy(update={"samples": 5}))
    with pytest.raises(FormatError, match="hashes to"):
        decode_root_data(data, ref.model_copy(update={"sha256": "0" * 64}))


def test_fixed_point_exp_and_log_are_close_to_the_libms_and_the_gradient_to_a_difference() -> None:
    from fedledger.protocol.reference import (
        Network,
        RootData,
        exp_nonpositive,
        log_positive,
    )

    x = -np.linspace(0.0, 40.0, 4001)
    assert np.max(np.abs(exp_nonpositive(x) / np.exp(x) - 1.0)) < 1e-13
    y = np.linspace(1e-3, 1e3, 4001)
    assert np.max(np.abs(log_positive(y) - np.log(y))) < 1e-13
    rng = np.random.default_rng(0)
    model = {
        "net.0.weight": rng.standard_normal((16, 8)).astype(np.float32),
        "net.0.bias": np.zeros(16, np.float32),
        "net.2.weight": rng.standard_normal((3, 16)).astype(np.float32),
        "net.2.bias": np.zeros(3, np.float32),
    }
    net = Network.of(model, "mlp_digits")
    root = RootData(rng.standard_normal((50, 8)).astype(np.float32), rng.integers(0, 3, 50))
    g = A.flatten(model, net.layout)[0].astype(np.float64)
    d = rng.standard_normal(g.size) * 1e-5
    numeric = (net.evaluate(g + d, root)[0] - net.evaluate(g - d, root)[0]) / 2
    analytic = -float(net.descent(g, root) @ d)
    assert analytic == pytest.approx(numeric, rel=0.2)  # up to the fixed-point quantization
    assert net.evaluate(g, root) == net.evaluate(g.copy(), root)  # the same bits


def test_a_model_that_is_not_a_relu_mlp_cannot_be_screened_on_root_data() -> None:
    from fedledger.protocol.reference import Network

    with pytest.raises(ConfigError, match="ReLU MLPs"):
        Network.of({"net.0.weight": np.zeros((2, 2), np.float32)}, {"kind": "sequential"})
    with pytest.raises(ConfigError, match="linear"):
        Network.of({"conv.weight": np.zeros((2, 2, 3, 3), np.float32)})
