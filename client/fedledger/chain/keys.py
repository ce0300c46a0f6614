"""Encrypted keystores (eth-account V3 JSON) under ``FEDLEDGER_KEYSTORE``.

A private key is only ever held in memory: it is written encrypted, never logged, never put in
an error message.  Passwords come from a prompt or ``FEDLEDGER_PASSWORD``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from fedledger.errors import KeystoreError, NotFoundError
from fedledger.keyfiles import NAME, check_name, write_private

# scrypt cost for user keys (eth-account's default) and a cheaper one for throwaway dev keys.
USER_SCRYPT_N = 2**18
DEV_SCRYPT_N = 2**12


@dataclass(frozen=True)
class KeyInfo:
    name: str
    address: str
    path: Path


def list_keys(keystore: Path) -> list[KeyInfo]:
    """Every keystore in the directory, sorted by name."""
    if not keystore.exists():
        return []
    out = []
    for p in sorted(keystore.glob("*.json")):
        try:
            data = json.loads(p.read_text())
            out.append(KeyInfo(name=p.stem, address=to_checksum_address(data["address"]), path=p))
        except (ValueError, KeyError):
            continue
    return out


def new_key(
    keystore: Path,
    name: str,
    password: str,
    *,
    private_key: str | bytes | None = None,
    scrypt_n: int = USER_SCRYPT_N,
) -> KeyInfo:
    """Create (or import, with ``private_key``) a key and store it encrypted as ``<name>.json``."""
    check_name(name)
    if not password:
        raise KeystoreError("refusing to create a keystore with an empty password")
    path = keystore / f"{name}.json"
    if path.exists():
        raise KeystoreError(
            f"a key named {name!r} already exists at {path}", hint="pick another name"
        )
    acct = Account.from_key(private_key) if private_key is not None else Account.create()
    enc = Account.encrypt(acct.key, password, kdf="scrypt", iterations=scrypt_n)
    write_private(path, json.dumps(enc))
    return KeyInfo(name=name, address=acct.address, path=path)


def find_key(keystore: Path, name_or_address: str) -> KeyInfo:
    """Find a keystore by its name or its address."""
    named = keystore / f"{name_or_address}.json"
    if NAME.match(name_or_address) and named.is_file():
        # a name is its file's stem: no need to read every other keystore (1,000 clients' keys)
        try:
            address = to_checksum_address(json.loads(named.read_text())["address"])
            return KeyInfo(name=named.stem, address=address, path=named)
        except (ValueError, KeyError):
            pass
    for k in list_keys(keystore):
        if k.name == name_or_address or k.address.lower() == name_or_address.lower():
            return k
    raise NotFoundError(
        f"no key {name_or_address!r} in {keystore}",
        hint="list keys with `fedledger keys list` or create one with `fedledger keys new`",
    )


def load_key(keystore: Path, name_or_address: str, password: str | None) -> LocalAccount:
    """Decrypt a keystore; a wrong password is a KeystoreError that names the key, not the secret."""
    info = find_key(keystore, name_or_address)
    if password is None:
        raise KeystoreError(
            f"no password for key {info.name!r}",
            hint="set FEDLEDGER_PASSWORD or answer the prompt",
        )
    try:
        key = Account.decrypt(json.loads(info.path.read_text()), password)
    except ValueError as exc:
        raise KeystoreError(f"wrong password for key {info.name!r} ({info.address})") from exc
    acct: LocalAccount = Account.from_key(key)
    return acct
