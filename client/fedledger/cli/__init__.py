"""The `fedledger` command line and the demo."""
