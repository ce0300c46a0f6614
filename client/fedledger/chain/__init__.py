"""Ethereum access: the TrainingLedger contract (ledger), its compiled artifacts and ABI, encrypted keystores and local devnets."""
