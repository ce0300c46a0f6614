"""The task spec: the one file (JSON on the content store, its CID on chain as ``specCid``) that
says how a task trains, screens and aggregates.  Owner of that format.

Because the spec is content-addressed and its CID is fixed on chain at ``createTask``, every
contributor, validator and re-verifier reads the same rules, and nobody can change them later.

Format ``fedledger.task/1`` (canonical JSON: sorted keys, compact separators)::

    {"format": "fedledger.task/1",
     "model": "mlp_digits", "model_kwargs": {},        # fedledger.learning.architecture: built-in name,
                                                        #   description or "module:factory"
     "model_sha256": "<64 hex>",                        # the architecture's pin
     "dataset": "digits",                               # what contributors train on (simulations)
     "training": {"epochs": 1, "lr": 0.05, "batch_size": 32, "optimizer": "sgd"},
     "aggregation": {"rule": "trimmed_mean", ...},      # fedledger.protocol.aggregation.RuleSpec
     "screening": {...},                                 # fedledger.protocol.screening parameters
     "fixed_point": {"frac_bits": 24},                  # optional: exact fixed-point deltas
     "root_data": {"cid": ..., "sha256": ..., "samples": 100},  # optional: validators' root
                                                        #   / evaluation data set
     "fetch_timeout_s": 30}

``fixed_point`` is optional (:class:`fedledger.protocol.fixedpoint.FixedPointFormat`).  Absent,
the task runs the float32 rules and its spec's bytes are exactly those of a spec written before
the section existed.  Present, every delta is an int32 vector in that format: contributors
upload ``int32`` files (floats are quantized by validators), and validators aggregate with the
exact integer rules (docs/aggregation.md, "Wiring").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedledger import safejson
from fedledger.errors import ConfigError, FormatError

if TYPE_CHECKING:
    from fedledger.protocol.fixedpoint import FixedPointFormat
    from fedledger.protocol.privacy_policy import PrivacyPolicy
    from fedledger.protocol.reference import RootDataRef

M = TypeVar("M", bound=BaseModel)


def parse_section(
    model: type[M],
    obj: Mapping[str, Any] | str | bytes,
    section: str,
    what: str,
    hint: str | None = None,
) -> M:
    """Validate one section of a task spec (given alone, as JSON text, or inside a whole spec).

    Unknown keys are errors, so a typo cannot silently do nothing; every bad field is named in
    one ConfigError.
    """
    if isinstance(obj, str | bytes):
        try:  # bounded like every JSON from outside (fedledger.safejson); a spec is ~1 KiB
            obj = safejson.loads(obj, what=what, max_bytes=1 << 20, max_depth=32)
        except FormatError as exc:
            raise ConfigError(exc.message, hint=hint or exc.hint) from exc
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{what} must be a JSON object, got {type(obj).__name__}")
    part = obj.get(section, obj) if section in obj else obj
    if not isinstance(part, Mapping):
        raise ConfigError(f"task spec '{section}' must be a JSON object")
    try:
        return model.model_validate(dict(part))
    except ValidationError as exc:
        reasons = "; ".join(
            (".".join(str(p) for p in err["loc"]) + ": " if err["loc"] else "")
            + err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ConfigError(f"invalid {what}: {reasons}", hint=hint) from exc


FORMAT = "fedledger.task/1"


class TrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(default=1, ge=1, le=1000)
    lr: float = Field(default=0.05, gt=0, le=10)
    batch_size: int = Field(default=32, ge=1, le=1_000_000)
    optimizer: str = Field(default="sgd", pattern="^(sgd|adam)$")


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = FORMAT
    model: str | dict[str, Any] = (
        "mlp_digits"  # read by fedledger.learning.architecture, never imported
    )
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    model_sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    dataset: str = "digits"
    training: TrainingParams = Field(default_factory=TrainingParams)
    aggregation: dict[str, Any] = Field(default_factory=lambda: {"rule": "fedavg"})
    screening: dict[str, Any] = Field(default_factory=dict)
    fetch_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    seed: int = Field(default=0, ge=0, lt=2**63)  # torch.manual_seed takes a 64-bit seed
    fixed_point: dict[str, Any] | None = None  # fedledger.protocol.fixedpoint.FixedPointFormat
    privacy: dict[str, Any] | None = None  # fedledger.protocol.privacy_policy.PrivacyPolicy
    root_data: dict[str, Any] | None = None  # fedledger.protocol.reference.RootDataRef

    def root_data_ref(self) -> RootDataRef | None:
        """The validators' root / evaluation data set the task names (``None``: none; the
        demo's figures then come from a built-in public split). Raises ConfigError naming every
        bad field."""
        if self.root_data is None:
            return None
        from fedledger.protocol.reference import RootDataRef  # it reads its own section

        return RootDataRef.parse(self.root_data)

    def fixed_point_format(self) -> FixedPointFormat | None:
        """The task's fixed-point format for deltas, ``None`` for a float32 task.

        Raises ConfigError naming every bad field of the ``fixed_point`` section.
        """
        if self.fixed_point is None:
            return None
        from fedledger.protocol.fixedpoint import FixedPointFormat  # it reads its own section

        return FixedPointFormat.parse(self.fixed_point)

    def privacy_policy(self) -> PrivacyPolicy:
        """The task's privacy section (a public task without one). Raises ConfigError naming
        every bad field."""
        from fedledger.protocol.privacy_policy import PrivacyPolicy  # it reads its own section

        return PrivacyPolicy.parse(self.privacy)

    def to_bytes(self) -> bytes:
        doc = self.model_dump(mode="json")
        for optional in (
            "fixed_point",
            "privacy",
            "root_data",
        ):  # absent: a spec's bytes (and CID) as before
            if doc.get(optional) is None:
                doc.pop(optional, None)
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TaskSpec:
        # bounded like every JSON from outside (fedledger.safejson); a spec is ~1 KiB
        raw = safejson.loads(data, what="task spec", max_bytes=1 << 20, max_depth=32)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise FormatError(f"task spec format must be {FORMAT!r}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise FormatError(
                f"invalid task spec: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            ) from exc
