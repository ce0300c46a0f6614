"""fedledger's settings: one pydantic-settings model fed by flags, ``FEDLEDGER_*`` variables and defaults.

Precedence: explicit values (CLI flags) > environment > defaults.  Paths default to the data dir
``FEDLEDGER_HOME`` (``~/.fedledger``).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedledger.errors import ConfigError


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
    allow_models: str = ""
    """Comma-separated ``module:factory`` names this node may import when a task names them
    (``FEDLEDGER_ALLOW_MODELS``; the CLI's ``--allow-model`` adds to it).  Empty: none, so a
    task naming its own code is refused; see :mod:`fedledger.learning.architecture`."""
    # The relay of `fedledger serve --relay-key` (fedledger_backend.relay_service.RelayPolicy, RelayLimits)
    relay_tasks: str = ""
    """Comma-separated task ids the relay serves besides the tasks this node validates
    (``FEDLEDGER_RELAY_TASKS``; the CLI's ``--relay-task`` adds to it)."""
    relay_open_budget: int = 0
    """Updates per round of a served open task relayed for contributors the task never admitted
    (``FEDLEDGER_RELAY_OPEN_BUDGET``, ``--relay-open-budget``); 0: none."""
    relay_task_updates_per_hour: int = 10_000
    """Updates the relay relays for one task per hour (``FEDLEDGER_RELAY_TASK_UPDATES_PER_HOUR``)."""
    relay_task_mib_per_hour: int = 8192
    """MiB of update files relayed and pinned for one task per hour."""
    relay_contributor_mib_per_hour: int = 512
    """MiB of update files relayed and pinned for one contributor per hour, all tasks together."""
    relay_ip_burst: int = 120
    """Relay requests one client IP (an IPv6 client's /64) may send in a burst, whatever their
    outcome (``FEDLEDGER_RELAY_IP_BURST``); refilled at ``relay_ip_per_s``."""
    relay_ip_per_s: float = 50.0
    trusted_proxies: str = ""
    """Comma-separated CIDRs of the reverse proxies in front of the API whose proxy header names
    the client (``FEDLEDGER_TRUSTED_PROXIES``; ``--trusted-proxy`` adds to it).  From any other
    peer the header is ignored and the socket peer is the client."""
    proxy_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    """Which header the trusted proxies set (``FEDLEDGER_PROXY_HEADER``); only it is read."""

    @field_validator(
        "relay_open_budget",
        "relay_task_updates_per_hour",
        "relay_task_mib_per_hour",
        "relay_contributor_mib_per_hour",
        "relay_ip_burst",
        "relay_ip_per_s",
    )
    @classmethod
    def _relay_non_negative(cls, v: float) -> float:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("relay_tasks")
    @classmethod
    def _task_ids(cls, v: str) -> str:
        for part in (p.strip() for p in v.split(",")):
            if part and not (part.isdigit() and 1 <= int(part) < 2**256):
                raise ValueError(f"{part!r} is not a task id (a positive integer)")
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: str) -> str:
        for part in (p.strip() for p in v.split(",")):
            if part:
                try:
                    ipaddress.ip_network(part, strict=False)
                except ValueError:
                    raise ValueError(f"{part!r} is not an IP address or CIDR") from None
        return v

    @property
    def relay_task_ids(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.relay_tasks.split(",") if p.strip())

    @property
    def trusted_proxy_list(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.trusted_proxies.split(",") if p.strip())

    @field_validator("confirmations", "log_chunk")
    @classmethod
    def _non_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @property
    def allowed_models(self) -> tuple[str, ...]:
        """``allow_models`` as a tuple (syntax checked where it is used)."""
        return tuple(m.strip() for m in self.allow_models.split(",") if m.strip())

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
