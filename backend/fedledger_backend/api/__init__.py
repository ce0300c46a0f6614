"""fedledger's REST API over the indexed chain: see :func:`fedledger_backend.api.app.create_app`."""

from fedledger_backend.api.app import create_app

__all__ = ["create_app"]
