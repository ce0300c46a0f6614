"""The update/model file format (fedledger.protocol.codec): canonical safetensors, strict parser, encodings."""

from __future__ import annotations

import contextlib
import json
import struct

import numpy as np
import pytest
import safetensors.numpy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as torch_load

from fedledger.errors import FormatError
from fedledger.protocol import codec

BASE = "0x" + "ab" * 32
WHO = "0x" + "c0" * 20


def model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(8).astype(np.float32),
        "fc.weight": rng.standard_normal((10, 72)).astype(np.float32),
        "fc.bias": rng.standard_normal(10).astype(np.float32),
        "bn.num_batches": np.array(3.0, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def raw_file(header: object, data: bytes = b"", *, pad: bool = True) -> bytes:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    if pad:
        text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data


META = {
    "fedledger.version": "1",
    "fedledger.kind": "model",
    "fedledger.task": "1",
    "fedledger.round": "0",
    "fedledger.encoding": "fp32",
}


# --------------------------------------------------------------------------- canonical writer


def test_model_round_trips_exactly() -> None:
    tensors = model()
    decoded = codec.decode(codec.encode_model(tensors, task_id=7, round=3), kind="model")
    assert decoded.kind == "model" and decoded.task_id == 7 and decoded.round == 3
    assert list(decoded.tensors) == sorted(tensors)
    for name, arr in tensors.items():
        assert decoded.tensors[name].dtype == np.float32
        assert decoded.tensors[name].shape == arr.shape
        assert np.array_equal(decoded.tensors[name], arr)


def test_same_tensors_give_the_same_bytes_whatever_the_dict_order() -> None:
    tensors = model()
    shuffled = dict(reversed(list(tensors.items())))
    a = codec.encode_update(
        tensors, task_id=1, round=2, base_hash=BASE, contributor=WHO, extra={"b": "1", "a": "2"}
    )
    b = codec.encode_update(
        shuffled, task_id=1, round=2, base_hash=BASE, contributor=WHO, extra={"a": "2", "b": "1"}
    )
    assert a == b
    assert codec.is_canonical(a)


def test_header_is_sorted_compact_json_padded_to_eight_bytes() -> None:
    data = codec.encode_model(model(), task_id=1, round=0, extra={"fedledger.dp.epsilon": "2.5"})
    (n,) = struct.unpack_from("<Q", data)
    assert (8 + n) % 8 == 0
    text = data[8 : 8 + n].rstrip(b" ").decode()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    header = json.loads(text)
    assert header["__metadata__"]["fedledger.dp.epsilon"] == "2.5"


def test_the_safetensors_package_loads_our_files() -> None:
    tensors = model()
    data = codec.encode_model(tensors, task_id=1, round=0)
    loaded = safetensors.numpy.load(data)
    assert set(loaded) == set(tensors)
    for name in tensors:
        assert np.array_equal(loaded[name], tensors[name])
    as_torch = torch_load(data)
    assert torch.equal(as_torch["fc.weight"], torch.from_numpy(tensors["fc.weight"]))
    for encoding in ("fp16", "int8", "topk"):
        safetensors.numpy.load(
            codec.encode_update(
                tensors, task_id=1, round=0, base_hash=BASE, contributor=WHO, encoding=encoding
            )
        )


def test_we_parse_files_written_by_the_safetensors_package() -> None:
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float32)}
    data = safetensors.numpy.save(tensors, metadata=META)
    decoded = codec.decode(data)
    assert np.array_equal(decoded.tensors["a"], tensors["a"])


def test_non_canonical_file_is_refused_when_canonical_is_required() -> None:
    data = safetensors.numpy.save({"b": np.ones(2, np.float32), "a": np.ones(2, np.float32)}, META)
    canonical = codec.write_safetensors(codec.read_safetensors(data).tensors, META)
    assert codec.decode(canonical, canonical=True)
    if data != canonical:
        with pytest.raises(FormatError, match="canonical"):
            codec.decode(data, canonical=True)


def test_sha256_hex_is_prefixed_lowercase() -> None:
    assert codec.sha256_hex(b"") == (
        "0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_decode_file_streams_the_same_result(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = codec.encode_update(
        model(), task_id=1, round=0, base_hash=BASE, contributor=WHO, encoding="int8"
    )
    path = tmp_path / "u.safetensors"
    path.write_bytes(data)
    a, b = codec.decode(data), codec.decode_file(path)
    assert a.metadata == b.metadata
    assert all(np.array_equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert codec.sha256_file(path) == codec.sha256_hex(data)


# --------------------------------------------------------------------------- encodings


def test_fp16_decodes_to_the_float16_rounding() -> None:
    tensors = model()
    decoded = codec.decode(
        codec.encode_update(
            tensors, task_id=1, round=0, base_hash=BASE, contributor=WHO, encoding="fp16"
        )
    )
    for name, arr in tensors.items():
        assert np.array_equal(decoded.tensors[name], arr.astype(np.float16).astype(np.float32))


def test_int8_error_is_at_most_half_a_step_and_the_scale_is_stored_exactly() -> None:
    tensors = model()
    data = codec.encode_update(
        tensors, task_id=1, round=0, base_hash=BASE, contributor=WHO, encoding="int8"
    )
    raw = codec.read_safetensors(data)
    decoded = codec.decode(data)
    for name, arr in tensors.items():
        scale = np.float32(np.abs(arr).max(initial=0) / np.float32(127))
        assert raw.tensors[f"{name}::scale"] == scale
        assert raw.tensors[name].dtype == np.int8
        if arr.size:
            assert np.abs(decoded.tensors[name] - arr).max() <= scale / 2 * 1.0001


def test_topk_keeps_the_largest_magnitudes_and_zeros_the_rest() -> None:
    delta = {"w": np.array([[0.1, -5.0, 0.2], [3.0, 0.0, -0.3]], dtype=np.float32)}
    data = codec.encode_update(
        delta, task_id=1, round=0, base_hash=BASE, contributor=WHO, encoding="topk", topk_ratio=0.33
    )
    decoded = codec.decode(data)
    assert decoded.encoding == "topk"
    assert np.array_equal(decoded.tensors["w"], np.array([[0, -5.0, 0], [3.0, 0, 0]], np.float32))


def test_topk_ties_break_towards_the_lower_index() -> None:
    delta = {"w": np.array([1.0, -1.0, 1.0, 1.0], dtype=np.float32)}
    data = codec.encode_update(
        delta, task_id=1, round=0, base_hash=BASE, contributor=WHO, encoding="topk", topk_ratio=0.5
    )
    assert np.array_equal(codec.decode(data).tensors["w"], np.array([1, -1, 0, 0], np.float32))


def test_error_feedback_carries_what_topk_dropped_into_the_next_round() -> None:
    residual = codec.Residual()
    delta = {"w": np.array([4.0, 1.0, 1.0, 1.0], dtype=np.float32)}
    first = codec.decode(
        codec.encode_update(
            delta,
            task_id=1,
            round=0,
            base_hash=BASE,
            contributor=WHO,
            encoding="topk",
            topk_ratio=0.25,
            residual=residual,
        )
    )
    assert np.array_equal(first.tensors["w"], np.array([4, 0, 0, 0], np.float32))
    assert np.array_equal(residual.tensors["w"], np.array([0, 1, 1, 1], np.float32))
    second = codec.decode(
        codec.encode_update(
            delta,
            task_id=1,
            round=1,
            base_hash=BASE,
            contributor=WHO,
            encoding="topk",
            topk_ratio=0.25,
            residual=residual,
        )
    )
    assert np.array_equal(second.tensors["w"], np.array([4, 0, 0, 0], np.float32))
    third_delta = {"w": np.zeros(4, np.float32)}
    third = codec.decode(
        codec.encode_update(
            third_delta,
            task_id=1,
            round=2,
            base_hash=BASE,
            contributor=WHO,
            encoding="topk",
            topk_ratio=0.25,
            residual=residual,
        )
    )
    assert np.array_equal(third.tensors["w"], np.array([0, 2, 0, 0], np.float32))


def test_encoder_refuses_what_the_format_cannot_hold() -> None:
    with pytest.raises(TypeError):
        codec.encode_model({"w": np.ones(2, np.float64)}, task_id=1, round=0)
    with pytest.raises(ValueError):
        codec.encode_model({"bad name!": np.ones(2, np.float32)}, task_id=1, round=0)
    with pytest.raises(ValueError):
        codec.encode_model({"w::scale": np.ones(2, np.float32)}, task_id=1, round=0)
    with pytest.raises(ValueError):
        codec.encode_update(
            {"w": np.ones(2, np.float32)}, task_id=1, round=0, base_hash="0x12", contributor=WHO
        )
    with pytest.raises(ValueError):
        codec.encode_update(
            {"w": np.array([np.nan], np.float32)},
            task_id=1,
            round=0,
            base_hash=BASE,
            contributor=WHO,
            encoding="int8",
        )
    with pytest.raises(ValueError):
        codec.encode_model(
            {"w": np.ones(2, np.float32)}, task_id=1, round=0, extra={"fedledger.kind": "update"}
        )


def test_fp32_update_keeps_non_finite_values_for_the_screener() -> None:
    delta = {"w": np.array([np.nan, np.inf, -0.0], np.float32)}
    out = codec.decode(
        codec.encode_update(delta, task_id=1, round=0, base_hash=BASE, contributor=WHO)
    ).tensors["w"]
    assert np.isnan(out[0]) and np.isinf(out[1]) and np.signbit(out[2])


# --------------------------------------------------------------------------- malformed corpus


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


GOOD_HEADER = {"__metadata__": META, "w": entry("F32", [2], 0, 8)}
GOOD = raw_file(GOOD_HEADER, b"\0" * 8)

MALFORMED = {
    "empty": b"",
    "shorter than the length prefix": b"\x10\0\0",
    "truncated header": GOOD[:20],
    "truncated data": GOOD[:-1],
    "trailing junk": GOOD + b"\0",
    "header too big": struct.pack("<Q", codec.MAX_HEADER_BYTES + 1) + b"{}",
    "header length past the end": struct.pack("<Q", 1000) + b"{}",
    "not json": raw_file(b"{not json}", b""),
    "json array": raw_file(b"[1,2]", b""),
    "invalid utf-8": raw_file(b'{"\xff":1}', b""),
    "duplicate key": raw_file(
        b'{"w":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"w":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
    ),
    "NaN in json": raw_file(b'{"w":{"dtype":"F32","shape":[NaN],"data_offsets":[0,0]}}'),
    "deep nesting": raw_file(b"{" + b'"a":[' * 5000 + b"]" * 5000 + b"}"),
    "bad dtype": raw_file({"__metadata__": META, "w": entry("F64", [1], 0, 8)}, b"\0" * 8),
    "pickle dtype": raw_file({"__metadata__": META, "w": entry("O", [1], 0, 8)}, b"\0" * 8),
    "negative dim": raw_file({"__metadata__": META, "w": entry("F32", [-1], 0, 0)}),
    "float dim": raw_file({"__metadata__": META, "w": entry("F32", [1.5], 0, 4)}, b"\0" * 4),
    "bool dim": raw_file({"__metadata__": META, "w": entry("F32", [True], 0, 4)}, b"\0" * 4),
    "too many dims": raw_file({"__metadata__": META, "w": entry("F32", [1] * 9, 0, 4)}, b"\0" * 4),
    "size mismatch": raw_file({"__metadata__": META, "w": entry("F32", [3], 0, 8)}, b"\0" * 8),
    "offsets out of bounds": raw_file(
        {"__metadata__": META, "w": entry("F32", [4], 0, 16)}, b"\0" * 8
    ),
    "offsets reversed": raw_file({"__metadata__": META, "w": entry("F32", [0], 8, 0)}, b"\0" * 8),
    "overlap": raw_file(
        {"__metadata__": META, "a": entry("F32", [2], 0, 8), "b": entry("F32", [1], 4, 8)},
        b"\0" * 8,
    ),
    "gap": raw_file(
        {"__metadata__": META, "a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)},
        b"\0" * 12,
    ),
    "extra entry key": raw_file(
        {"__metadata__": META, "w": {**entry("F32", [2], 0, 8), "x": 1}}, b"\0" * 8
    ),
    "missing entry key": raw_file(
        {"__metadata__": META, "w": {"dtype": "F32", "shape": [2]}}, b"\0" * 8
    ),
    "bad name": raw_file({"__metadata__": META, "../w": entry("F32", [2], 0, 8)}, b"\0" * 8),
    "empty name": raw_file({"__metadata__": META, "": entry("F32", [2], 0, 8)}, b"\0" * 8),
    "metadata not strings": raw_file(
        {"__metadata__": {"a": 1}, "w": entry("F32", [2], 0, 8)}, b"\0" * 8
    ),
    "no fedledger metadata": raw_file({"w": entry("F32", [2], 0, 8)}, b"\0" * 8),
    "unknown kind": raw_file(
        {"__metadata__": {**META, "fedledger.kind": "x"}, "w": entry("F32", [2], 0, 8)}, b"\0" * 8
    ),
    "wrong version": raw_file(
        {"__metadata__": {**META, "fedledger.version": "2"}, "w": entry("F32", [2], 0, 8)},
        b"\0" * 8,
    ),
    "bad round": raw_file(
        {"__metadata__": {**META, "fedledger.round": "-1"}, "w": entry("F32", [2], 0, 8)}, b"\0" * 8
    ),
    "update without base": raw_file(
        {"__metadata__": {**META, "fedledger.kind": "update"}, "w": entry("F32", [2], 0, 8)},
        b"\0" * 8,
    ),
    "fp32 file holding F16": raw_file(
        {"__metadata__": META, "w": entry("F16", [4], 0, 8)}, b"\0" * 8
    ),
    "int8 without scale": raw_file(
        {
            "__metadata__": {
                **META,
                "fedledger.kind": "update",
                "fedledger.base": BASE,
                "fedledger.encoding": "int8",
            },
            "w": entry("I8", [8], 0, 8),
        },
        b"\0" * 8,
    ),
    "topk index out of range": raw_file(
        {
            "__metadata__": {
                **META,
                "fedledger.kind": "update",
                "fedledger.base": BASE,
                "fedledger.encoding": "topk",
            },
            "w::shape": entry("I64", [1], 0, 8),
            "w::indices": entry("I32", [1], 8, 12),
            "w::values": entry("F32", [1], 12, 16),
        },
        struct.pack("<qif", 2, 5, 1.0),
    ),
    "topk dense shape too large": raw_file(
        {
            "__metadata__": {
                **META,
                "fedledger.kind": "update",
                "fedledger.base": BASE,
                "fedledger.encoding": "topk",
            },
            "w::shape": entry("I64", [2], 0, 16),
            "w::indices": entry("I32", [0], 16, 16),
            "w::values": entry("F32", [0], 16, 16),
        },
        struct.pack("<qq", 2**40, 2**20),
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_file_raises_format_error(name: str) -> None:
    with pytest.raises(FormatError):
        codec.decode(MALFORMED[name])


def test_the_corpus_base_file_is_valid() -> None:
    assert codec.decode(GOOD).tensors["w"].shape == (2,)


def test_file_over_the_size_cap_is_refused_before_parsing() -> None:
    with pytest.raises(FormatError, match="limit"):
        codec.decode(GOOD, max_bytes=len(GOOD) - 1)


def test_a_model_is_not_accepted_where_an_update_is_expected() -> None:
    with pytest.raises(FormatError, match="update"):
        codec.decode(GOOD, kind="update")


# --------------------------------------------------------------------------- properties

names = st.from_regex(r"[a-z][a-z0-9_.]{0,12}", fullmatch=True)
arrays = st.builds(
    lambda shape, seed: np.random.default_rng(seed).standard_normal(shape).astype(np.float32),
    st.lists(st.integers(0, 4), max_size=3).map(tuple),
    st.integers(0, 2**32 - 1),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(names, arrays, max_size=5), st.sampled_from(codec.ENCODINGS))
def test_every_encoding_round_trips_its_shapes(
    tensors: dict[str, np.ndarray], encoding: str
) -> None:
    data = codec.encode_update(
        tensors, task_id=1, round=0, base_hash=BASE, contributor=WHO, encoding=encoding
    )  # type: ignore[arg-type]
    decoded = codec.decode(data, canonical=True)
    assert {k: v.shape for k, v in decoded.tensors.items()} == {
        k: v.shape for k, v in tensors.items()
    }
    if encoding == "fp32":
        assert all(np.array_equal(decoded.tensors[k], v) for k, v in tensors.items())


SEED = codec.encode_update(
    model(), task_id=1, round=0, base_hash=BASE, contributor=WHO, encoding="topk", topk_ratio=0.2
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_files_never_raise_anything_but_format_error(data: st.DataObject) -> None:
    buf = bytearray(SEED)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if action == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del buf[pos : pos + data.draw(st.integers(1, 16))]
        else:
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    with contextlib.suppress(FormatError):
        codec.decode(bytes(buf))
