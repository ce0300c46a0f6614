"""CAR v1 export/import (fedledger.content.car): what moves content to and from a real node."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from fedledger.content.blockstore import Blockstore
from fedledger.content.car import (
    decode_header,
    encode_header,
    export_car,
    import_car,
    iter_car,
    read_car,
)
from fedledger.content.cid import compute_cid, parse_cid
from fedledger.errors import ContentNotFoundError, FormatError, IntegrityError

# Written by @ipld/car's CarWriter for the DAG that ipfs-unixfs-importer built (CIDv1, raw leaves,
# 64-byte chunks) of the 300 bytes sha256(99 ‖ counter) — an independent implementation.
JS_CAR = bytes.fromhex(
    "3aa265726f6f747381d82a58250001701220ca160772f73f813f067257db49a1e042e030f0192d3afd4af472"
    "0a875bfebbe06776657273696f6e01910201701220ca160772f73f813f067257db49a1e042e030f0192d3afd"
    "4af4720a875bfebbe0122a0a240155122065356c530d2ea2caddf93a86a5c96710ab4550bbc35bbecf5b247d"
    "4bed2d151d12001840122a0a240155122079f3ab9c19304456ae95b28e7cb1f956dbbc602b06f6db121da37e"
    "a99569558212001840122a0a2401551220cb819bdfb1be31522a981e298b640f3513fabc135551cacaa0f5e2"
    "36ff1788fe12001840122a0a240155122089ce610de8f13cb44dd5484134ba735f16724f66bca38a6d305272"
    "91ca2e62f912001840122a0a24015512201e430263e69abb03f2b6458c1dc0eed6a29f8312bfd32e78e2d092"
    "5da69c22ad1200182c0a0f080218ac022040204020402040202c50015512201e430263e69abb03f2b6458c1d"
    "c0eed6a29f8312bfd32e78e2d0925da69c22ad7d12262f26d83dfdcaaa5ebfddfa5160b54e2f23e732e1f22d"
    "e89bf8f4677fb81c9fd7f3da2a097b6b45c360640155122089ce610de8f13cb44dd5484134ba735f16724f66"
    "bca38a6d30527291ca2e62f9e86da60c63be6a204a9dfe5d4415927c0fa2b5e497775b12ff0e15368345a4a3"
    "c50d7943b62d566e29246adff1e82c656b3d7c25ebc5cbce65f288e02c8ee7256401551220cb819bdfb1be31"
    "522a981e298b640f3513fabc135551cacaa0f5e236ff1788fe225286fdaa8dbfc9b1fb03477d6343951b2ac9"
    "7669f8120479d5471ac0495137060cfe202a8626e03b1e4b8d1e85cf0517cfc5a7927f66bcae5882b605b279"
    "30640155122079f3ab9c19304456ae95b28e7cb1f956dbbc602b06f6db121da37ea9956955824647dd247bd7"
    "59476a5aa5a99aa5931ca616e41ef2622ec1114b30c6a9a0f4e375b81b5ff835d7c1b24769b1d3cf7a4e371c"
    "723b93c7a8999375fb63aee38506640155122065356c530d2ea2caddf93a86a5c96710ab4550bbc35bbecf5b"
    "247d4bed2d151d35ffd281157d9786f1f3deff62908354d42a1a112044f4b8409f8468b5ae5b998cb82577f6"
    "69ff7a0b9c690b6d2dcfeda8e25757e09bf5c64bf8d16ed556de5a"
)
JS_ROOT = "bafybeigkcydxf5z7qe7qm4sx3ne2dycc4aypagjnhl6uv5dsbkdvx7v34a"


def js_content() -> bytes:
    out = b"".join(
        hashlib.sha256((99).to_bytes(8, "little") + i.to_bytes(8, "little")).digest()
        for i in range(10)
    )
    return out[:300]


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Blockstore, Blockstore]:
    return Blockstore(tmp_path / "a", chunk_size=64), Blockstore(tmp_path / "b", chunk_size=64)


def test_a_car_written_by_the_js_implementation_imports_and_pins(
    stores: tuple[Blockstore, Blockstore],
) -> None:
    _, store = stores
    result = import_car(store, io.BytesIO(JS_CAR))
    assert result.roots == (JS_ROOT,) and result.blocks == 6
    assert store.get(JS_ROOT) == js_content()
    assert store.is_pinned(JS_ROOT)


def test_export_then_import_moves_a_dag_between_stores(
    stores: tuple[Blockstore, Blockstore],
) -> None:
    src, dst = stores
    data = bytes(range(256)) * 300  # repeated chunks: each block travels once
    cid = src.put(data)
    buf = io.BytesIO()
    size = export_car(src, cid, buf)
    assert size == len(buf.getvalue())
    buf.seek(0)
    result = import_car(dst, buf)
    assert result.roots == (cid,)
    assert dst.get(cid) == data
    blocks = [c for c, _ in read_car(io.BytesIO(buf.getvalue()))[1]]
    assert len(blocks) == len({c.multihash for c in blocks})


def test_our_export_of_the_js_content_has_the_same_root_and_blocks(
    stores: tuple[Blockstore, Blockstore],
) -> None:
    src, _ = stores
    assert src.put(js_content()) == JS_ROOT
    ours = b"".join(iter_car(src, JS_ROOT))
    roots_a, blocks_a = read_car(io.BytesIO(ours))
    roots_b, blocks_b = read_car(io.BytesIO(JS_CAR))
    assert roots_a == roots_b
    assert {c: b for c, b in blocks_a} == {c: b for c, b in blocks_b}


def test_header_round_trips() -> None:
    root = parse_cid(compute_cid(b"x"))
    assert decode_header(encode_header([root])) == [root]


def test_a_tampered_block_is_refused(stores: tuple[Blockstore, Blockstore]) -> None:
    _, store = stores
    car = bytearray(JS_CAR)
    car[-1] ^= 0x01
    with pytest.raises(IntegrityError):
        import_car(store, io.BytesIO(bytes(car)))
    assert not store.is_pinned(JS_ROOT)


@pytest.mark.parametrize(
    "car",
    [
        b"",
        JS_CAR[:10],
        JS_CAR[:-5],
        b"\x01\xa0",  # header {} without version
        bytes([len(h := encode_header([]).replace(b"version\x01", b"version\x02"))]) + h,
        b"\x02\x81\x01",  # header is an array
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # absurd varint
    ],
)
def test_malformed_cars_raise_format_error(
    stores: tuple[Blockstore, Blockstore], car: bytes
) -> None:
    _, store = stores
    with pytest.raises(FormatError):
        import_car(store, io.BytesIO(car))


def test_a_car_missing_blocks_of_its_root_is_not_pinned(
    stores: tuple[Blockstore, Blockstore],
) -> None:
    _, store = stores
    roots, sections = read_car(io.BytesIO(JS_CAR))
    partial = io.BytesIO()
    header = encode_header(roots)
    partial.write(bytes([len(header)]) + header)
    for i, (cid, block) in enumerate(sections):
        if i == 2:
            continue
        body = cid.to_bytes() + block
        partial.write(
            bytes([len(body)])
            if len(body) < 128
            else bytes([len(body) & 127 | 128, len(body) >> 7])
        )
        partial.write(body)
    partial.seek(0)
    with pytest.raises(ContentNotFoundError):
        import_car(store, partial)
