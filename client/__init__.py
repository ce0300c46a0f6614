"""fedledger client SDK: codec, content store, chain access, training and the CLI."""

import logging

__version__ = "0.1.0"

# A library logs only where its user asked (`fedledger serve` and the worker configure
# handlers); without this, Python's last-resort handler would print warnings into a CLI's
# one-line errors.
logging.getLogger("fedledger").addHandler(logging.NullHandler())
