"""Committee encryption: the envelope format, hostile envelopes, key files, and what an outsider
with the whole content store sees with and without it.  Real crypto, real files, real store."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox

from fedledger.content.store import ContentStore
from fedledger.errors import FormatError, KeystoreError, NotFoundError
from fedledger.learning.data import load_dataset
from fedledger.protocol import codec, committee
from fedledger.protocol.committee import (
    MAX_RECIPIENTS,
    SEGMENT_BYTES,
    NotRecipientError,
    is_envelope,
    open_envelope,
    read_header,
    seal,
)
from fedledger.protocol.committee_keys import (
    DEV_SCRYPT_N,
    decrypt_key,
    encrypt_key,
    find_committee_key,
    list_committee_keys,
    load_committee_key,
    new_committee_key,
)

BASE = "0x" + "00" * 32
WHO = "0x" + "ab" * 20
ROOT = "0x" + "5a" * 32
FIXED = committee._FIXED.size
PER_RECIPIENT = committee.KEY_ID_BYTES + committee.WRAPPED_KEY_BYTES
# Offsets of the fixed header's fields (see the format in fedledger.protocol.committee).
F_VERSION, F_TASK, F_ROUND, F_WHO, F_HASH, F_ROOT, F_SIZE, F_NONCE, F_COUNT = (
    8,
    9,
    41,
    49,
    69,
    101,
    133,
    141,
    149,
)


@pytest.fixture(scope="module")
def members() -> list[PrivateKey]:
    return [PrivateKey.generate() for _ in range(3)]


def _seal(data: bytes, members: list[PrivateKey], **kw: object) -> bytearray:
    args: dict[str, object] = {"task_id": 7, "round": 3, "tensor_root": ROOT, "contributor": WHO}
    args.update(kw)
    return seal(data, [m.public_key for m in members], **args)  # type: ignore[arg-type]


def _with(env: bytes | bytearray, offset: int, new: bytes) -> bytes:
    out = bytearray(env)
    out[offset : offset + len(new)] = new
    return bytes(out)


# --------------------------------------------------------------------------- the format


@pytest.mark.parametrize(
    "size", [0, 1, 1000, SEGMENT_BYTES - 1, SEGMENT_BYTES, SEGMENT_BYTES + 1, 3 * SEGMENT_BYTES + 5]
)
def test_every_member_opens_the_same_plaintext(members: list[PrivateKey], size: int) -> None:
    data = os.urandom(size)
    env = _seal(data, members)
    assert len(env) == committee.envelope_size(size, len(members))
    for m in members:
        opened = open_envelope(
            env, m, task_id=7, round=3, contributor=WHO.upper().replace("X", "x")
        )
        assert bytes(opened.plaintext) == data
        assert opened.header.plaintext_hash == "0x" + hashlib.sha256(data).hexdigest()


def test_header_shows_recipients_and_commitments_without_a_key(members: list[PrivateKey]) -> None:
    data = os.urandom(5000)
    env = _seal(data, list(reversed(members)))
    h = read_header(env)
    assert h.version == committee.VERSION
    assert (h.task_id, h.round, h.contributor) == (7, 3, WHO)
    assert h.plaintext_hash == codec.sha256_hex(data)
    assert h.tensor_root == ROOT
    assert h.plaintext_size == 5000 and h.segments == 1
    # Canonical: recipients sorted by key id whatever order they were given in.
    assert list(h.key_ids) == sorted(bytes(m.public_key) for m in members)
    assert h.header_size == FIXED + len(members) * PER_RECIPIENT
    assert is_envelope(env) and not is_envelope(data)


def test_uint256_task_ids_and_a_zero_contributor_round_trip(members: list[PrivateKey]) -> None:
    env = seal(b"x", [members[0].public_key], task_id=2**256 - 1, round=2**64 - 1)
    h = read_header(env)
    assert (h.task_id, h.round, h.contributor) == (2**256 - 1, 2**64 - 1, None)
    assert h.tensor_root == "0x" + "00" * 32


def test_each_envelope_has_a_fresh_content_key(members: list[PrivateKey]) -> None:
    a, b = _seal(b"same bytes" * 100, members), _seal(b"same bytes" * 100, members)
    ha, hb = read_header(a), read_header(b)
    assert a[ha.header_size :] != b[hb.header_size :]
    assert {r.wrapped_key for r in ha.recipients}.isdisjoint(r.wrapped_key for r in hb.recipients)


def test_seal_refuses_bad_recipients_and_a_wrong_claimed_hash(members: list[PrivateKey]) -> None:
    pk = members[0].public_key
    with pytest.raises(ValueError, match="duplicate"):
        seal(b"x", [pk, pk], task_id=1, round=0)
    with pytest.raises(ValueError, match="at least one"):
        seal(b"x", [], task_id=1, round=0)
    with pytest.raises(ValueError, match="usable X25519"):
        seal(b"x", [bytes(32)], task_id=1, round=0)
    with pytest.raises(ValueError, match="at most"):
        seal(b"x", [os.urandom(32) for _ in range(MAX_RECIPIENTS + 1)], task_id=1, round=0)
    with pytest.raises(ValueError, match="not the sha256"):
        seal(b"x", [pk], task_id=1, round=0, plaintext_hash=codec.sha256_hex(b"y"))
    ok = seal(b"x", [pk], task_id=1, round=0, plaintext_hash=codec.sha256_hex(b"x"))
    assert bytes(open_envelope(ok, members[0]).plaintext) == b"x"


# --------------------------------------------------------------------------- hostile envelopes


def test_a_key_that_is_not_a_recipient_is_told_so(members: list[PrivateKey]) -> None:
    env = _seal(b"secret update", members[:2])
    with pytest.raises(NotRecipientError, match="not encrypted to key"):
        open_envelope(env, members[2])
    assert issubclass(NotRecipientError, FormatError)


def test_envelope_for_another_task_round_or_sender_is_refused(members: list[PrivateKey]) -> None:
    env = _seal(b"update", members)
    for kw in ({"task_id": 8}, {"round": 4}, {"contributor": "0x" + "cd" * 20}):
        with pytest.raises(FormatError, match="sealed for") as err:
            open_envelope(env, members[0], **kw)  # type: ignore[arg-type]
        assert err.value.hint


@pytest.mark.parametrize("cut", [0, 1, 7, 8, FIXED - 1, FIXED, FIXED + 50, -17, -1])
def test_truncated_envelopes_are_format_errors(members: list[PrivateKey], cut: int) -> None:
    env = bytes(_seal(os.urandom(3000), members))
    with pytest.raises(FormatError) as err:
        read_header(env[:cut])
    assert err.value.hint is not None
    with pytest.raises(FormatError):
        open_envelope(env[:cut], members[0])


def test_trailing_bytes_are_refused(members: list[PrivateKey]) -> None:
    env = bytes(_seal(b"abc", members))
    with pytest.raises(FormatError, match="describes"):
        read_header(env + b"\0")


def test_every_single_bit_flip_in_the_header_is_caught(members: list[PrivateKey]) -> None:
    env = bytes(_seal(os.urandom(2000), members))
    header_size = read_header(env).header_size
    for pos in range(header_size):
        for bit in (0, 7):
            bad = _with(env, pos, bytes([env[pos] ^ (1 << bit)]))
            with pytest.raises(FormatError):
                open_envelope(bad, members[1])


def test_bit_flips_in_ciphertext_tags_and_wrapped_keys_are_caught(
    members: list[PrivateKey],
) -> None:
    data = os.urandom(2 * SEGMENT_BYTES + 100)
    env = bytes(_seal(data, members))
    h = read_header(env)
    mine = h.key_ids.index(bytes(members[0].public_key))
    wrapped_at = FIXED + mine * PER_RECIPIENT + committee.KEY_ID_BYTES
    body = h.header_size
    for pos in (
        wrapped_at,
        wrapped_at + 40,
        wrapped_at + committee.WRAPPED_KEY_BYTES - 1,
        body,
        body + SEGMENT_BYTES + 15,  # the first segment's tag
        body + SEGMENT_BYTES + 16 + 12345,  # inside the second segment
        len(env) - 1,
    ):
        with pytest.raises(FormatError):
            open_envelope(_with(env, pos, bytes([env[pos] ^ 0x01])), members[0])


def test_swapped_segments_are_caught(members: list[PrivateKey]) -> None:
    env = bytearray(_seal(os.urandom(2 * SEGMENT_BYTES), members))
    body, seg = read_header(env).header_size, SEGMENT_BYTES + committee.TAG_BYTES
    first, second = env[body : body + seg], env[body + seg : body + 2 * seg]
    env[body : body + seg], env[body + seg : body + 2 * seg] = second, first
    with pytest.raises(FormatError, match="segment 0 fails"):
        open_envelope(env, members[0])


@pytest.mark.parametrize("claimed", [0, MAX_RECIPIENTS + 1, 10**6, 2**32 - 1])
def test_absurd_recipient_counts_are_refused_before_parsing(
    members: list[PrivateKey], claimed: int
) -> None:
    env = _with(_seal(b"x", members), F_COUNT, struct.pack(">I", claimed))
    with pytest.raises(FormatError, match="recipients"):
        read_header(env)


def test_a_recipient_count_larger_than_the_file_is_truncation(members: list[PrivateKey]) -> None:
    env = _with(_seal(b"x", members[:1]), F_COUNT, struct.pack(">I", MAX_RECIPIENTS))
    with pytest.raises(FormatError, match="truncated"):
        read_header(env)


@pytest.mark.parametrize("claimed", [2**64 - 1, committee.DEFAULT_MAX_PLAINTEXT, 10**6])
def test_plaintext_sizes_beyond_the_file_allocate_nothing(
    members: list[PrivateKey], claimed: int
) -> None:
    env = _with(_seal(b"tiny", members), F_SIZE, struct.pack(">Q", claimed))
    tracemalloc.start()
    try:
        with pytest.raises(FormatError):
            open_envelope(env, members[0])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_duplicate_or_unsorted_recipients_are_refused(members: list[PrivateKey]) -> None:
    env = bytes(_seal(b"x", members[:2]))
    first = env[FIXED : FIXED + PER_RECIPIENT]
    second = env[FIXED + PER_RECIPIENT : FIXED + 2 * PER_RECIPIENT]
    for a, b in ((first, first), (second, first)):
        with pytest.raises(FormatError, match="out of order or repeated"):
            read_header(env[:FIXED] + a + b + env[FIXED + 2 * PER_RECIPIENT :])


def test_unknown_versions_and_foreign_files_are_refused(members: list[PrivateKey]) -> None:
    env = _seal(b"x", members)
    with pytest.raises(FormatError, match="version 2 is not supported"):
        read_header(_with(env, F_VERSION, b"\x02"))
    update = codec.encode_update(
        {"w": np.ones(3, np.float32)}, task_id=1, round=0, base_hash=BASE, contributor=WHO
    )
    with pytest.raises(FormatError, match="bad magic"):
        read_header(update + bytes(FIXED))
    with pytest.raises(FormatError):
        codec.decode(bytes(env))  # and the codec never mistakes an envelope for an update


def _seal_with_claim(data: bytes, key: PrivateKey, claimed: bytes, wrap_to: bytes) -> bytes:
    """An envelope whose sender knows its content key and lies about the plaintext hash (or
    wraps a key that is not the content key): what a dishonest contributor can write."""
    content_key, prefix = os.urandom(32), os.urandom(8)
    header = (
        committee._FIXED.pack(
            committee.MAGIC,
            1,
            (7).to_bytes(32, "big"),
            3,
            bytes(20),
            claimed,
            bytes(32),
            len(data),
            prefix,
            1,
        )
        + bytes(key.public_key)
        + bytes(SealedBox(key.public_key).encrypt(wrap_to or content_key))
    )
    aad = hashlib.sha256(header).digest()
    return header + AESGCM(content_key).encrypt(prefix + bytes(4), data, aad)


def test_a_plaintext_that_does_not_hash_to_its_commitment_is_refused(
    members: list[PrivateKey],
) -> None:
    lie = _seal_with_claim(b"real update", members[0], hashlib.sha256(b"other").digest(), b"")
    with pytest.raises(FormatError, match="does not hash to the committed"):
        open_envelope(lie, members[0])
    honest = _seal_with_claim(
        b"real update", members[0], hashlib.sha256(b"real update").digest(), b""
    )
    assert bytes(open_envelope(honest, members[0]).plaintext) == b"real update"


def test_a_wrapped_key_that_is_not_the_content_key_is_refused(members: list[PrivateKey]) -> None:
    bad = _seal_with_claim(b"u", members[0], hashlib.sha256(b"u").digest(), os.urandom(32))
    with pytest.raises(FormatError, match="segment 0 fails"):
        open_envelope(bad, members[0])
    short = _seal_with_claim(b"u", members[0], hashlib.sha256(b"u").digest(), os.urandom(16))
    with pytest.raises(FormatError):
        open_envelope(short, members[0])


# --------------------------------------------------------------------------- key files


def test_committee_key_file_round_trips_and_is_private(tmp_path: Path) -> None:
    info = new_committee_key(tmp_path / "keys", "val-1", "pw", scrypt_n=DEV_SCRYPT_N)
    assert info.path == tmp_path / "keys" / "committee" / "val-1.json"
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
    key = load_committee_key(tmp_path / "keys", "val-1", "pw")
    assert bytes(key.public_key) == info.public_key
    doc = json.loads(info.path.read_text())
    assert bytes(key).hex() not in info.path.read_text()
    assert doc["public_key"] == info.public_hex and doc["kdfparams"]["n"] == DEV_SCRYPT_N
    # Listed and found by name or public key without the password.
    assert [k.name for k in list_committee_keys(tmp_path / "keys")] == ["val-1"]
    assert (
        find_committee_key(tmp_path / "keys", info.public_hex.upper().replace("X", "x")).name
        == "val-1"
    )
    env = seal(b"for val-1", [info.public_key], task_id=1, round=0)
    assert bytes(open_envelope(env, key).plaintext) == b"for val-1"


def test_wrong_password_missing_key_and_tampered_files(tmp_path: Path) -> None:
    info = new_committee_key(tmp_path, "v", "right", scrypt_n=DEV_SCRYPT_N)
    with pytest.raises(KeystoreError, match="wrong password"):
        load_committee_key(tmp_path, "v", "wrong")
    with pytest.raises(KeystoreError, match="no password"):
        load_committee_key(tmp_path, "v", None)
    with pytest.raises(NotFoundError):
        load_committee_key(tmp_path, "nobody", "right")
    with pytest.raises(KeystoreError, match="already exists"):
        new_committee_key(tmp_path, "v", "right", scrypt_n=DEV_SCRYPT_N)
    doc = json.loads(info.path.read_text())
    swapped = dict(doc, public_key="0x" + bytes(PrivateKey.generate().public_key).hex())
    with pytest.raises(KeystoreError, match="not the private key's"):
        decrypt_key(swapped, "right")


@pytest.mark.parametrize(
    "params",
    [
        {"n": 2**30, "r": 8, "p": 1},  # 128 GiB of scrypt memory
        {"n": 2**20, "r": 32, "p": 16},
        {"n": 1000, "r": 8, "p": 1},
        {"n": "4096", "r": 8, "p": 1},
    ],
)
def test_hostile_scrypt_parameters_are_refused_without_work(params: dict[str, object]) -> None:
    doc = encrypt_key(PrivateKey.generate(), "pw", scrypt_n=DEV_SCRYPT_N)
    doc["kdfparams"] = dict(doc["kdfparams"], **params)
    with pytest.raises(KeystoreError, match="not a readable committee key"):
        decrypt_key(doc, "pw")


# --------------------------------------------------------------------------- the outsider


def _single_example_update() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One SGD step of a linear model on one real digits example: (delta, the example)."""
    ds = load_dataset("digits", seed=0)
    x = torch.tensor(ds.X_train[:1], dtype=torch.float32)
    y = torch.tensor(ds.y_train[:1], dtype=torch.long)
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], 10)
    lr = 0.1
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert model.weight.grad is not None and model.bias.grad is not None
    delta = {
        "weight": (-lr * model.weight.grad).numpy().astype(np.float32),
        "bias": (-lr * model.bias.grad).numpy().astype(np.float32),
    }
    return delta, ds.X_train[0].astype(np.float32)


def _reconstruct(delta: dict[str, np.ndarray]) -> np.ndarray:
    """The gradient-inversion attack on a linear layer: dW = -lr g x^T, db = -lr g, so each row of
    dW divided by its bias entry is the input."""
    i = int(np.argmax(np.abs(delta["bias"])))
    return delta["weight"][i].astype(np.float64) / float(delta["bias"][i])


def test_outsider_reconstructs_the_example_from_a_plaintext_update(store: ContentStore) -> None:
    delta, x = _single_example_update()
    file = codec.encode_update(delta, task_id=1, round=0, base_hash=BASE, contributor=WHO)
    cid = store.put(file)  # what the chain points everyone to
    seen = codec.decode(store.get(cid), kind="update").tensors  # the outsider: store + chain
    assert float(np.max(np.abs(_reconstruct(seen) - x))) < 1e-5


def test_outsider_sees_only_ciphertext_of_a_committee_encrypted_update(
    store: ContentStore, members: list[PrivateKey]
) -> None:
    delta, x = _single_example_update()
    file = codec.encode_update(delta, task_id=1, round=0, base_hash=BASE, contributor=WHO)
    env = seal(file, [m.public_key for m in members], task_id=1, round=0, contributor=WHO)
    cid = store.put(env)
    got = store.get(cid)
    # The outsider can read who it is for and what it commits to, nothing more.
    header = read_header(got)
    assert header.plaintext_hash == codec.sha256_hex(file)
    with pytest.raises(FormatError):
        codec.decode(got, kind="update")
    outsider = PrivateKey.generate()
    with pytest.raises(NotRecipientError):
        open_envelope(got, outsider)
    for r in header.recipients:  # no wrapped key opens for a key outside the committee
        with pytest.raises(CryptoError):
            SealedBox(outsider).decrypt(r.wrapped_key)
    # No trace of the plaintext in the stored bytes: not the file, not its tensors, not the
    # example, not even the safetensors header.
    assert file not in got
    assert delta["weight"].tobytes()[:64] not in got
    assert x.tobytes()[:32] not in got
    assert file[8:64] not in got
    # A committee member (a validator) sees the plaintext: and so the example.
    opened = open_envelope(got, members[1], task_id=1, round=0, contributor=WHO)
    assert bytes(opened.plaintext) == file
    inside = codec.decode(opened.plaintext, kind="update").tensors
    assert float(np.max(np.abs(_reconstruct(inside) - x))) < 1e-5
