"""fedledger's settings: one pydantic-settings model fed by flags, ``FEDLEDGER_*`` variables and defaults.

Precedence: explicit values (CLI flags) > environment > defaults.  Paths default to the data dir
``FEDLEDGER_HOME`` (``~/.fedledger``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from client.errors import ConfigError


class Settings(BaseSettings):
    """Where fedledger finds its chain, content store, database, data dir and keys."""

    model_config = SettingsConfigDict(env_prefix="FEDLEDGER_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".fedledger")
    rpc_url: str | None = None
    ipfs: str | None = None
    db: str | None = None
    keystore: Path | None = None
    contract: str | None = None
    confirmations: int = 0
    log_chunk: int = 2000
    password: str | None = Field(default=None, repr=False)

    @field_validator("confirmations", "log_chunk")
    @classmethod
    def _non_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @property
    def keystore_dir(self) -> Path:
        return self.keystore or (self.home / "keystore")

    @property
    def db_url(self) -> str:
        if self.db:
            return self.db
        return f"sqlite:///{self.home / 'fedledger.db'}"

    @property
    def deployments_dir(self) -> Path:
        return self.home / "deployments"

    def devnet_file(self) -> Path:
        return self.home / "devnet.json"

    def resolve_rpc_url(self) -> str:
        """The RPC URL to use: the setting, else the devnet that `fedledger devnet` started."""
        if self.rpc_url:
            return self.rpc_url
        f = self.devnet_file()
        if f.exists():
            try:
                return str(json.loads(f.read_text())["url"])
            except (ValueError, KeyError) as exc:
                raise ConfigError(f"{f} is not a devnet record: {exc}") from exc
        raise ConfigError(
            "no chain configured",
            hint="set FEDLEDGER_RPC_URL or --rpc-url, or start one with `fedledger devnet`",
        )

    def with_overrides(self, **values: Any) -> Settings:
        """A copy with the non-None values replaced (CLI flags win over the environment)."""
        clean = {k: v for k, v in values.items() if v is not None}
        if not clean:
            return self
        # Validate the flags exactly as the environment is validated (init values win over env).
        return type(self)(**{**self.model_dump(), **clean})


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings().with_overrides(**overrides)
    except ValidationError as exc:
        bad = "; ".join(
            f"FEDLEDGER_{'_'.join(map(str, e['loc'])).upper()} (or --{'-'.join(map(str, e['loc']))})"
            f"={e.get('input')!r}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid setting {bad}") from exc
    except ValueError as exc:
        raise ConfigError(f"invalid fedledger setting: {exc}") from exc
