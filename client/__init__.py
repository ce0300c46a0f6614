"""fedledger client SDK: codec, content store, chain access, training and the CLI."""

__version__ = "0.1.0"
