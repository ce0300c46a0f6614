"""Bytes <-> CID <-> store: Kubo-compatible CIDs, dag-pb, CAR files, the embedded blockstore, the Kubo RPC adapter and the digests the chain records."""
