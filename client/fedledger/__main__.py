"""``python -m fedledger``: the command line, as the ``fedledger`` script runs it."""

from fedledger.cli.main import main

main()
