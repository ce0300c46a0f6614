"""Committee members' X25519 keys, stored encrypted beside the account keystores.

A validator or auditor of a private task holds one X25519 key pair: the public key is what it
registers on chain (``setEncryptionKey``) and what envelopes name it by
(:mod:`fedledger.protocol.committee`); the private key opens them.  Like an account key
(:mod:`fedledger.chain.keys`), it is only ever held in memory: on disk it is encrypted under a
password with scrypt (the account keystores' cost, ``n = 2**18, r = 8, p = 1``) and a NaCl
secretbox (XSalsa20-Poly1305), both from libsodium through PyNaCl.  The file keeps the public
key in the clear, so listing keys and registering one needs no password.

Layout: ``<keystore>/committee/<name>.json``, a separate folder so that the account keystore
listing never mistakes one for an account.  File format (JSON, version 1)::

    {"version": 1, "kind": "fedledger-committee-key", "curve": "x25519",
     "public_key": "0x<32 bytes>", "kdf": "scrypt",
     "kdfparams": {"n": 262144, "r": 8, "p": 1, "salt": "<32 bytes hex>"},
     "cipher": "xsalsa20-poly1305", "nonce": "<24 bytes hex>", "ciphertext": "<48 bytes hex>"}

A key file may come from anywhere (a backup, a colleague): its scrypt parameters are bounded
before any work is done, so a hostile file cannot make the reader allocate gigabytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.utils
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey
from nacl.secret import SecretBox

from fedledger.errors import KeystoreError, NotFoundError
from fedledger.keyfiles import check_name, write_private

__all__ = [
    "DEV_SCRYPT_N",
    "USER_SCRYPT_N",
    "CommitteeKeyInfo",
    "decrypt_key",
    "encrypt_key",
    "find_committee_key",
    "list_committee_keys",
    "load_committee_key",
    "new_committee_key",
    "public_key_of",
]

USER_SCRYPT_N = 2**18
DEV_SCRYPT_N = 2**12
_R, _P = 8, 1
_MAX_MEMORY = 1 << 30  # scrypt needs 128 * n * r * p bytes; refuse files asking for more
_KIND = "fedledger-committee-key"
_VERSION = 1
_SUBDIR = "committee"


@dataclass(frozen=True)
class CommitteeKeyInfo:
    name: str
    public_key: bytes
    path: Path

    @property
    def public_hex(self) -> str:
        """``0x`` hex of the public key, as the chain records it."""
        return "0x" + self.public_key.hex()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return nacl.bindings.crypto_pwhash_scryptsalsa208sha256_ll(
        password.encode("utf-8"), salt, n, r, p, dklen=SecretBox.KEY_SIZE, maxmem=_MAX_MEMORY + 1
    )


def encrypt_key(key: PrivateKey, password: str, *, scrypt_n: int = USER_SCRYPT_N) -> dict[str, Any]:
    """The key file's JSON object for ``key`` under ``password``."""
    if not password:
        raise KeystoreError("refusing to encrypt a committee key with an empty password")
    _check_cost(scrypt_n, _R, _P)
    salt = nacl.utils.random(32)
    nonce = nacl.utils.random(SecretBox.NONCE_SIZE)
    box = SecretBox(_scrypt(password, salt, scrypt_n, _R, _P))
    sealed = box.encrypt(bytes(key), nonce)
    return {
        "version": _VERSION,
        "kind": _KIND,
        "curve": "x25519",
        "public_key": "0x" + bytes(key.public_key).hex(),
        "kdf": "scrypt",
        "kdfparams": {"n": scrypt_n, "r": _R, "p": _P, "salt": salt.hex()},
        "cipher": "xsalsa20-poly1305",
        "nonce": nonce.hex(),
        "ciphertext": sealed.ciphertext.hex(),
    }


def _check_cost(n: int, r: int, p: int) -> None:
    if not (isinstance(n, int) and 2**10 <= n <= 2**22 and n & (n - 1) == 0):
        raise ValueError(f"scrypt n must be a power of two in [2**10, 2**22], got {n!r}")
    if not (isinstance(r, int) and isinstance(p, int) and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError(f"scrypt r, p out of range: {r!r}, {p!r}")
    if 128 * n * r * p > _MAX_MEMORY:
        raise ValueError(f"scrypt parameters ask for {128 * n * r * p} bytes of memory")


def _hex(doc: dict[str, Any], key: str, size: int) -> bytes:
    value = doc[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a string")
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != size:
        raise ValueError(f"{key} is {len(raw)} bytes, expected {size}")
    return raw


def public_key_of(doc: object) -> bytes:
    """The public key a key file's JSON object declares (no password needed); ValueError if
    it is not a committee key file."""
    if not isinstance(doc, dict) or doc.get("kind") != _KIND:
        raise ValueError("not a fedledger committee key file")
    if doc.get("version") != _VERSION:
        raise ValueError(f"unsupported committee key file version {doc.get('version')!r}")
    return _hex(doc, "public_key", 32)


def decrypt_key(doc: object, password: str, *, name: str = "committee key") -> PrivateKey:
    """The private key in a key file's JSON object; KeystoreError for a wrong password or a
    file that is not a committee key (never a message holding the secret)."""
    try:
        public = public_key_of(doc)
        assert isinstance(doc, dict)
        params = doc["kdfparams"]
        if doc.get("kdf") != "scrypt" or doc.get("cipher") != "xsalsa20-poly1305":
            raise ValueError("unsupported kdf or cipher")
        if not isinstance(params, dict):
            raise ValueError("kdfparams is not an object")
        n, r, p = params["n"], params["r"], params["p"]
        _check_cost(n, r, p)
        salt = _hex(params, "salt", 32)
        nonce = _hex(doc, "nonce", SecretBox.NONCE_SIZE)
        ciphertext = _hex(doc, "ciphertext", 32 + SecretBox.MACBYTES)
    except (KeyError, ValueError, TypeError) as exc:
        raise KeystoreError(f"{name} is not a readable committee key file: {exc}") from exc
    try:
        secret = SecretBox(_scrypt(password, salt, n, r, p)).decrypt(ciphertext, nonce)
    except CryptoError as exc:
        raise KeystoreError(f"wrong password for {name} (0x{public.hex()})") from exc
    key = PrivateKey(secret)
    if bytes(key.public_key) != public:
        raise KeystoreError(
            f"{name}: the stored public key is not the private key's",
            hint="the file was edited; restore it from a backup",
        )
    return key


def new_committee_key(
    keystore: Path,
    name: str,
    password: str,
    *,
    private_key: PrivateKey | None = None,
    scrypt_n: int = USER_SCRYPT_N,
) -> CommitteeKeyInfo:
    """Create (or import, with ``private_key``) an X25519 key as ``committee/<name>.json``."""
    check_name(name)
    path = Path(keystore) / _SUBDIR / f"{name}.json"
    if path.exists():
        raise KeystoreError(
            f"a committee key named {name!r} already exists at {path}", hint="pick another name"
        )
    key = private_key if private_key is not None else PrivateKey.generate()
    write_private(path, json.dumps(encrypt_key(key, password, scrypt_n=scrypt_n), indent=2))
    return CommitteeKeyInfo(name=name, public_key=bytes(key.public_key), path=path)


def list_committee_keys(keystore: Path) -> list[CommitteeKeyInfo]:
    """Every committee key file in the keystore, sorted by name (unreadable files skipped)."""
    folder = Path(keystore) / _SUBDIR
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob("*.json")):
        try:
            if p.stat().st_size > 64 * 1024:
                continue
            out.append(CommitteeKeyInfo(p.stem, public_key_of(json.loads(p.read_text())), p))
        except (OSError, ValueError):
            continue
    return out


def find_committee_key(keystore: Path, name_or_public_key: str) -> CommitteeKeyInfo:
    """A committee key by its name or its ``0x`` public key."""
    wanted = name_or_public_key.lower()
    for k in list_committee_keys(keystore):
        if k.name == name_or_public_key or k.public_hex == wanted:
            return k
    raise NotFoundError(
        f"no committee key {name_or_public_key!r} in {Path(keystore) / _SUBDIR}",
        hint="create one with new_committee_key and register its public key on chain",
    )


def load_committee_key(keystore: Path, name_or_public_key: str, password: str | None) -> PrivateKey:
    """Decrypt a committee key; KeystoreError for a missing or wrong password."""
    info = find_committee_key(keystore, name_or_public_key)
    if password is None:
        raise KeystoreError(
            f"no password for committee key {info.name!r}",
            hint="set FEDLEDGER_PASSWORD or answer the prompt",
        )
    return decrypt_key(json.loads(info.path.read_text()), password, name=f"key {info.name!r}")
