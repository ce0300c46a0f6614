"""fedledger validator service: indexer, verifier, aggregator and REST API."""
