"""Ethereum addresses at the API's edge: accepted in any letter case, returned checksummed."""

from __future__ import annotations

import re
from functools import lru_cache

from eth_utils import to_checksum_address
from fastapi import HTTPException

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")  # fullmatch: "$" would let a trailing "\n" in


@lru_cache(maxsize=65536)
def checksum(address: str) -> str:
    """EIP-55 form of a hex address (cached: responses checksum the same few addresses often)."""
    return str(to_checksum_address(address))


def parse_address(value: str) -> str:
    """Accept an address in any letter case; 422 for anything that is not 20 hex bytes."""
    if not _ADDRESS.fullmatch(value):
        raise HTTPException(422, detail=f"not an Ethereum address: {value[:64]!r}")
    return checksum(value.lower())
