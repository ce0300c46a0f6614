"""Fixed-point tasks end to end: the int32 update encoding, judge_round on int32 vectors with the
exact rules, the OUT_OF_RANGE verdict, the SDK's local checks, and a real anvil + contract +
embedded store + validator running two rounds that ``fedledger verify`` re-checks bit for bit.
A float task (no ``fixed_point`` section) is judged exactly as before."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import httpx
import numpy as np
import pytest
from pipeline_kit import backend_for, make_scenario

from fedledger.content.store import ContentStore
from fedledger.errors import ConfigError, FormatError
from fedledger.flows import submit as submit_flow
from fedledger.flows.verify import verify_task
from fedledger.protocol import aggregation as agg
from fedledger.protocol import codec, exact_rules, fixed_deltas, fixedpoint, rounds, verdicts
from fedledger.protocol.aggregation import TensorLayout
from fedledger.protocol.fixedpoint import FixedPointFormat, FixedPointRangeError
from fedledger.protocol.rounds import UpdateRef, judge_round
from fedledger.protocol.taskspec import TaskSpec
from fedledger.protocol.verdicts import Verdict
from fedledger_backend.api.server import BackgroundServer

BASE = "0x" + "11" * 32
WHO = "0x" + "ab" * 20
FMT = FixedPointFormat(frac_bits=24)


def _delta(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": (rng.standard_normal((3, 4)) * 0.05).astype(np.float32),
        "b": (rng.standard_normal(5) * 0.05).astype(np.float32),
    }


def _int32_file(delta: dict[str, np.ndarray], fmt: FixedPointFormat = FMT, **kw: object) -> bytes:
    args: dict[str, object] = dict(task_id=1, round=0, base_hash=BASE, contributor=WHO)
    args.update(kw)
    return codec.encode_update(delta, encoding="int32", fixed_point=fmt, **args)  # type: ignore[arg-type]


def _with_header(data: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    """``data`` with its safetensors header JSON edited by ``edit`` (then padded again)."""
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + n])
    edit(header)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


# --------------------------------------------------------------------------- codec: int32


def test_int32_update_round_trips_as_int32_in_canonical_form() -> None:
    d = _delta(1)
    data = _int32_file(d, FixedPointFormat(frac_bits=20))
    dec = codec.decode(data, kind="update", canonical=True)
    assert dec.encoding == "int32" and dec.fixed_point == FixedPointFormat(frac_bits=20)
    assert dec.metadata[codec.K_FIXED_POINT] == '{"coordinate":"int32","frac_bits":20}'
    assert dec.extra == {}
    for name, arr in d.items():
        got = dec.tensors[name]
        assert got.dtype == np.int32 and got.shape == arr.shape
        assert np.array_equal(got.reshape(-1), fixedpoint.quantize(arr, dec.fixed_point))
    # decoded from a file on disk too, and the float encodings name no format
    assert (
        codec.decode(
            codec.encode_update(d, task_id=1, round=0, base_hash=BASE, contributor=WHO)
        ).fixed_point
        is None
    )


def test_int32_encoding_refuses_an_out_of_range_value_naming_tensor_and_element() -> None:
    d = _delta(2)
    d["w"][2, 1] = 200.0  # frac_bits 24 holds [-128, 128)
    with pytest.raises(FixedPointRangeError, match=r"tensor 'w' element \[2, 1\].*200\.0"):
        _int32_file(d)


def test_int32_encoding_options_are_checked() -> None:
    with pytest.raises(ValueError, match="int32 encoding's format"):
        codec.encode_update(
            _delta(), task_id=1, round=0, base_hash=BASE, contributor=WHO, fixed_point=FMT
        )
    with pytest.raises(ValueError, match="may not set"):
        codec.encode_update(
            _delta(),
            task_id=1,
            round=0,
            base_hash=BASE,
            contributor=WHO,
            extra={codec.K_FIXED_POINT: '{"coordinate":"int32","frac_bits":24}'},
        )


@pytest.mark.parametrize(
    "value",
    [
        None,  # missing
        '{"coordinate": "int32", "frac_bits": 24}',  # not the canonical spelling
        '{"coordinate":"int32","frac_bits":32}',  # out of 0..31
        '{"coordinate":"int32","frac_bits":024}',
        '{"coordinate":"int32","frac_bits":-1}',
        '{"coordinate":"int64","frac_bits":24}',
        '{"coordinate":"int32","frac_bits":24,"x":1}',
        '{"frac_bits":24,"coordinate":"int32"}',
        "24",
        "x" * 100_000,
    ],
)
def test_hostile_fixed_point_metadata_is_malformed(value: str | None) -> None:
    def edit(h: dict) -> None:
        if value is None:
            del h["__metadata__"][codec.K_FIXED_POINT]
        else:
            h["__metadata__"][codec.K_FIXED_POINT] = value

    with pytest.raises(FormatError, match=codec.K_FIXED_POINT):
        codec.decode(_with_header(_int32_file(_delta()), edit))


def test_a_float_file_naming_a_fixed_point_format_is_malformed() -> None:
    plain = codec.encode_update(_delta(), task_id=1, round=0, base_hash=BASE, contributor=WHO)

    def edit(h: dict) -> None:
        h["__metadata__"][codec.K_FIXED_POINT] = '{"coordinate":"int32","frac_bits":24}'

    with pytest.raises(FormatError, match="only int32 updates"):
        codec.decode(_with_header(plain, edit))


def test_int32_file_with_float_or_auxiliary_tensors_is_malformed() -> None:
    fp32 = codec.encode_update(_delta(), task_id=1, round=0, base_hash=BASE, contributor=WHO)

    def claim_int32(h: dict) -> None:  # F32 data under an int32 encoding
        h["__metadata__"][codec.K_ENCODING] = "int32"
        h["__metadata__"][codec.K_FIXED_POINT] = '{"coordinate":"int32","frac_bits":24}'

    with pytest.raises(FormatError, match="int32 file holds 'b' as F32"):
        codec.decode(_with_header(fp32, claim_int32))
    int8 = codec.encode_update(
        _delta(), task_id=1, round=0, base_hash=BASE, contributor=WHO, encoding="int8"
    )
    with pytest.raises(FormatError, match="int32 file holds"):
        codec.decode(_with_header(int8, claim_int32))


def test_int32_file_shape_and_size_are_bounded() -> None:
    data = _int32_file({"w": np.zeros((64, 64), np.float32)})
    with pytest.raises(FormatError, match="over the 100 limit"):
        codec.decode(data, max_elements=100)

    def lie_shape(h: dict) -> None:
        h["w"]["shape"] = [2**40, 2**40]

    with pytest.raises(FormatError, match="shape"):
        codec.decode(_with_header(data, lie_shape))


def test_int32_model_files_do_not_exist() -> None:
    data = _int32_file(_delta())

    def as_model(h: dict) -> None:
        h["__metadata__"][codec.K_KIND] = "model"
        del h["__metadata__"][codec.K_BASE]

    with pytest.raises(FormatError, match="not allowed for a model"):
        codec.decode(_with_header(data, as_model))
    with pytest.raises(ValueError):
        codec.encode_model(_delta(), task_id=1, round=0, encoding="int32")  # type: ignore[arg-type]


def test_quantize_delta_names_the_flat_coordinate_in_task_order() -> None:
    d = _delta(3)
    layout = agg.TensorLayout.of(d)  # w (12 values) then b
    d["b"][3] = -500.0
    with pytest.raises(FixedPointRangeError, match=r"coordinate 15 \(tensor 'b' element \[3\]\)"):
        fixed_deltas.quantize_delta(d, layout, FMT)
    assert fixed_deltas.format_problem(None, FMT) is None
    assert fixed_deltas.format_problem(FMT, FMT) is None
    assert "frac_bits=20" in str(fixed_deltas.format_problem(FixedPointFormat(frac_bits=20), FMT))
    assert "without a fixed-point format" in str(fixed_deltas.format_problem(FMT, None))


# --------------------------------------------------------------------------- task spec


def test_a_float_spec_is_byte_for_byte_what_it_was() -> None:
    spec = TaskSpec()
    assert b"fixed_point" not in spec.to_bytes()
    assert spec.fixed_point_format() is None
    assert TaskSpec.from_bytes(spec.to_bytes()) == spec
    fixed = TaskSpec(fixed_point={"frac_bits": 20})
    assert b'"fixed_point":{"frac_bits":20}' in fixed.to_bytes()
    assert TaskSpec.from_bytes(fixed.to_bytes()).fixed_point_format() == FixedPointFormat(
        frac_bits=20
    )
    with pytest.raises(ConfigError, match="frac_bits"):
        TaskSpec(fixed_point={"frac_bits": 40}).fixed_point_format()


# --------------------------------------------------------------------------- judge_round


def _global() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(99)
    return {
        "w": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal(5).astype(np.float32),
    }


def _agreeing(n: int, seed: int = 7) -> list[dict[str, np.ndarray]]:
    """n deltas sharing one direction (honest contributors agree), each with its own noise."""
    rng = np.random.default_rng(seed)
    shared = {k: rng.standard_normal(v.shape) * 0.05 for k, v in _global().items()}
    return [
        {k: (v + rng.standard_normal(v.shape) * 0.01).astype(np.float32) for k, v in shared.items()}
        for _ in range(n)
    ]


ADDRS = [f"0x{i:040x}" for i in range(1, 20)]


def _judge(
    store: ContentStore,
    spec: TaskSpec,
    files: list[tuple[int, str, bytes, int]],
    base: bytes,
):  # type: ignore[no-untyped-def]
    layout = TensorLayout.of(codec.decode(base, kind="model").tensors)

    def root(data: bytes) -> str:
        """The tensorRoot the contributor records (zero for a file that does not decode)."""
        try:
            dec = codec.decode(data, kind="update")
            return rounds.update_tensor_root(dec, layout, spec.fixed_point_format())
        except Exception:  # noqa: BLE001 - a malformed file records nothing meaningful
            return rounds.ZERO_ROOT

    refs = [
        UpdateRef(uid, who, codec.sha256_hex(data), store.put(data), ns, 0, root(data))
        for uid, who, data, ns in files
    ]
    return judge_round(
        store, task_id=1, round_=0, spec=spec, base_model=base, updates=refs, max_samples=1000
    )


def _files(
    deltas: list[dict[str, np.ndarray]], base_hash: str, encoding: str = "int32", first: int = 0
) -> list[tuple[str, bytes]]:
    out = []
    for i, d in enumerate(deltas, start=first):
        kw: dict[str, object] = {"fixed_point": FMT} if encoding == "int32" else {}
        data = codec.encode_update(
            d,
            task_id=1,
            round=0,
            base_hash=base_hash,
            contributor=ADDRS[i],
            encoding=encoding,  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )
        out.append((ADDRS[i], data))
    return out


FIXED_SPEC = TaskSpec(aggregation={"rule": "fedavg"}, fixed_point={"frac_bits": 24})


def test_judge_round_aggregates_exactly_and_applies_the_dequantized_aggregate(
    store: ContentStore,
) -> None:
    base = codec.encode_model(_global(), task_id=1, round=0)
    deltas = _agreeing(5)
    files = _files(deltas[:3], codec.sha256_hex(base)) + _files(
        deltas[3:], codec.sha256_hex(base), "fp32", 3
    )  # int32 and float uploads mix: the float ones are quantized by the judge
    weights = [10, 20, 30, 40, 50]
    j = _judge(
        store, FIXED_SPEC, [(i + 1, w, d, weights[i]) for i, (w, d) in enumerate(files)], base
    )
    assert [e.verdict for e in j.verdict_file.entries] == [Verdict.ACCEPTED] * 5
    layout = agg.TensorLayout.of(_global())
    vecs = [fixed_deltas.quantize_delta(d, layout, FMT) for d in deltas]
    rule = exact_rules.ExactRule.from_rule_spec(agg.RuleSpec(rule="fedavg"), FMT)
    q = exact_rules.aggregate_exact(rule, vecs, weights)
    want = agg.apply_delta(_global(), fixed_deltas.dequantize_tensors(q, layout, FMT))
    assert j.aggregate == codec.encode_model(want, task_id=1, round=1)
    assert j.aggregate_hash == codec.sha256_hex(j.aggregate)


@pytest.mark.parametrize(
    "rule", [{"rule": "fedavg"}, {"rule": "median"}, {"rule": "trimmed_mean", "beta": 0.2}]
)
def test_the_aggregate_is_the_same_whatever_order_the_updates_come_in(
    store: ContentStore, rule: dict
) -> None:
    spec = TaskSpec(aggregation=rule, fixed_point={"frac_bits": 24})
    base = codec.encode_model(_global(), task_id=1, round=0)
    files = _files(_agreeing(6, seed=3), codec.sha256_hex(base))
    weights = [3, 1, 4, 1, 5, 9]
    hashes = set()
    for seed in range(4):  # the same files under other updateIds: another order of addition
        ids = random.Random(seed).sample(range(1, 100), len(files))
        j = _judge(
            store, spec, [(ids[k], w, d, weights[k]) for k, (w, d) in enumerate(files)], base
        )
        assert all(e.verdict == Verdict.ACCEPTED for e in j.verdict_file.entries)
        hashes.add(j.aggregate_hash)
    assert len(hashes) == 1


def test_a_float_upload_out_of_range_is_out_of_range_and_the_rest_accepted(
    store: ContentStore,
) -> None:
    base = codec.encode_model(_global(), task_id=1, round=0)
    deltas = _agreeing(5)
    deltas[4]["w"][1, 2] = 1000.0  # frac_bits 24 holds [-128, 128)
    files = _files(deltas[:4], codec.sha256_hex(base)) + _files(
        deltas[4:], codec.sha256_hex(base), "fp32", 4
    )
    j = _judge(store, FIXED_SPEC, [(i + 1, w, d, 10) for i, (w, d) in enumerate(files)], base)
    got = {e.update_id: e for e in j.verdict_file.entries}
    assert [got[i].verdict for i in range(1, 5)] == [Verdict.ACCEPTED] * 4
    assert got[5].verdict == Verdict.OUT_OF_RANGE
    # the global model's tensor order (a decoded file's: b, then w): w[1, 2] is 5 + 6
    assert "coordinate 11 (tensor 'w' element [1, 2]) is 1000.0" in got[5].reason
    # the verdict file parses back and its leaf carries code 12
    assert verdicts.parse(j.verdict_bytes, canonical=True).entry(5).verdict == 12
    # NaN stays NON_FINITE and a wrong shape SHAPE_MISMATCH, as for a float task
    nan = {k: np.full_like(v, np.nan) for k, v in deltas[0].items()}
    shape = {"w": np.zeros((2, 4), np.float32), "b": np.zeros(5, np.float32)}
    more = _files([nan, shape], codec.sha256_hex(base), "fp32", 4)
    j = _judge(
        store, FIXED_SPEC, [(i + 1, w, d, 10) for i, (w, d) in enumerate(files[:4] + more)], base
    )
    assert [e.verdict for e in j.verdict_file.entries][4:] == [
        Verdict.NON_FINITE,
        Verdict.SHAPE_MISMATCH,
    ]


def test_an_int32_update_of_another_format_or_to_a_float_task_is_malformed(
    store: ContentStore,
) -> None:
    base = codec.encode_model(_global(), task_id=1, round=0)
    bh = codec.sha256_hex(base)
    files = _files(_agreeing(4), bh)
    other = codec.encode_update(
        _agreeing(5)[4],
        task_id=1,
        round=0,
        base_hash=bh,
        contributor=ADDRS[4],
        encoding="int32",
        fixed_point=FixedPointFormat(frac_bits=20),
    )
    entries = [(i + 1, w, d, 10) for i, (w, d) in enumerate(files)] + [(5, ADDRS[4], other, 10)]
    j = _judge(store, FIXED_SPEC, entries, base)
    e = j.verdict_file.entry(5)
    assert (
        e.verdict == Verdict.MALFORMED and "frac_bits=20" in e.reason and "frac_bits=24" in e.reason
    )
    float_task = TaskSpec(aggregation={"rule": "fedavg"})
    j = _judge(store, float_task, entries, base)
    assert {e.verdict for e in j.verdict_file.entries} == {Verdict.MALFORMED}
    assert "without a fixed-point format" in j.verdict_file.entry(1).reason


def test_a_float_task_is_judged_exactly_as_the_float_path(store: ContentStore) -> None:
    spec = TaskSpec(aggregation={"rule": "fedavg"})
    base = codec.encode_model(_global(), task_id=1, round=0)
    deltas = _agreeing(4)
    files = _files(deltas, codec.sha256_hex(base), "fp32")
    j = _judge(store, spec, [(i + 1, w, d, 10 + i) for i, (w, d) in enumerate(files)], base)
    layout = agg.TensorLayout.of(_global())
    rule = agg.RuleSpec(rule="fedavg").with_task_cap(1000)
    delta = agg.aggregate_tensors(rule, deltas, [10, 11, 12, 13], layout)
    want = codec.encode_model(agg.apply_delta(_global(), delta), task_id=1, round=1)
    assert j.aggregate_hash == codec.sha256_hex(want)


# --------------------------------------------------------------------------- the real stack


def _run_until_final(backend, ledger, task_id: int, rnd: int, passes: int = 20) -> None:  # type: ignore[no-untyped-def]
    for _ in range(passes):
        backend.run_pass()
        if ledger.current_round(task_id) > rnd:
            backend.run_pass()
            return
    raise AssertionError(f"round {rnd} not final after {passes} passes: {backend.status()}")


def test_a_fixed_point_task_runs_two_rounds_and_verify_agrees(
    ledger, store, dev_accounts, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    sc = make_scenario(
        ledger,
        store,
        dev_accounts,
        n_contributors=6,
        rule={"rule": "fedavg"},
        fixed_point={"frac_bits": 24},
    )
    st = sc.state()
    fmt = st.spec.fixed_point_format()
    assert fmt == FMT
    glob = codec.decode(store.get(st.global_cid)).tensors
    # round 0: four honest contributors (the SDK encodes int32 by default), one float upload
    # out of range, one int32 file of another format
    honest = [sc.honest_update(i) for i in range(4)]
    assert all(codec.decode(d).encoding == "int32" for d, _ in honest)
    ids = [sc.submit_bytes(i, d, n) for i, (d, n) in enumerate(honest)]
    big = {k: np.zeros_like(v) for k, v in glob.items()}
    name = next(iter(big))
    big[name].reshape(-1)[7] = 500.0
    out_of_range = codec.encode_update(
        big,
        task_id=sc.task_id,
        round=0,
        base_hash=st.global_hash,
        contributor=sc.contributors[4].address,
    )
    ids.append(sc.submit_bytes(4, out_of_range, 100))
    other = codec.encode_update(
        {k: np.zeros_like(v) for k, v in glob.items()},
        task_id=sc.task_id,
        round=0,
        base_hash=st.global_hash,
        contributor=sc.contributors[5].address,
        encoding="int32",
        fixed_point=FixedPointFormat(frac_bits=20),
    )
    ids.append(sc.submit_bytes(5, other, 100))
    backend = backend_for(sc, sc.validators[0], tmp_path / "v.db")
    _run_until_final(backend, ledger, sc.task_id, 0)

    with BackgroundServer(backend.app()) as srv:
        status = {uid: httpx.get(f"{srv.url}/contributions/{uid}").json()["status"] for uid in ids}
    assert [status[u] for u in ids] == ["ACCEPTED"] * 4 + ["OUT_OF_RANGE", "MALFORMED"]

    # the new global model is global + dequantize(exact fedavg of the accepted int32 vectors)
    after = sc.state()
    layout = agg.TensorLayout.of(glob)
    vecs = [fixed_deltas.flatten_fixed(codec.decode(d).tensors, layout) for d, _ in honest]
    rule = exact_rules.ExactRule.from_rule_spec(
        agg.RuleSpec(rule="fedavg").with_task_cap(st.config.max_samples), fmt
    )
    q = exact_rules.aggregate_exact(rule, vecs, [n for _, n in honest])  # type: ignore[arg-type]
    want = agg.apply_delta(glob, fixed_deltas.dequantize_tensors(q, layout, fmt))
    assert after.global_hash == codec.sha256_hex(
        codec.encode_model(want, task_id=sc.task_id, round=1)
    )

    # round 1: every contributor honest
    for i in range(6):
        sc.submit_bytes(i, *sc.honest_update(i))
    _run_until_final(backend, ledger, sc.task_id, 1)

    report = verify_task(sc.ledger, sc.store, sc.task_id)
    assert report.ok, report.problems
    assert [r.round for r in report.rounds] == [0, 1]
    assert report.rounds[0].accepted == 4 and report.rounds[1].accepted >= 4


def test_the_sdk_refuses_locally_what_validators_would_refuse(ledger, store, dev_accounts) -> None:  # type: ignore[no-untyped-def]
    sc = make_scenario(ledger, store, dev_accounts, n_contributors=1, fixed_point={"frac_bits": 24})
    st = sc.state()
    me = sc.contributors[0].address
    glob = codec.decode(store.get(st.global_cid)).tensors
    delta = {k: np.zeros_like(v) for k, v in glob.items()}
    last = list(delta)[-1]
    delta[last].reshape(-1)[-1] = -129.0
    flat = agg.TensorLayout.of(glob).size - 1
    with pytest.raises(FormatError, match=rf"coordinate {flat} \(tensor '{last}'.*OUT_OF_RANGE"):
        submit_flow.encode(st, delta, contributor=me)  # int32 by default
    fp32 = submit_flow.encode(st, delta, contributor=me, encoding="fp32")
    with pytest.raises(FormatError, match=rf"coordinate {flat} .*OUT_OF_RANGE"):
        submit_flow.check_update(st, fp32, contributor=me, base=glob)
    other = codec.encode_update(
        {k: np.zeros_like(v) for k, v in glob.items()},
        task_id=sc.task_id,
        round=0,
        base_hash=st.global_hash,
        contributor=me,
        encoding="int32",
        fixed_point=FixedPointFormat(frac_bits=20),
    )
    with pytest.raises(FormatError, match="frac_bits=20.*MALFORMED"):
        submit_flow.check_update(st, other, contributor=me, base=glob)
    fine = submit_flow.encode(st, {k: np.zeros_like(v) for k, v in glob.items()}, contributor=me)
    dec = submit_flow.check_update(st, fine, contributor=me, base=glob)
    assert dec.encoding == "int32" and dec.fixed_point == FMT
