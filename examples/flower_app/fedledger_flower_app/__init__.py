"""A Flower app on a fedledger ledger: examples/flower_app/README.md says how to run it."""
