"""fedledger's REST API over the indexed chain: see :func:`backend.api.app.create_app`."""

from backend.api.app import create_app

__all__ = ["create_app"]
