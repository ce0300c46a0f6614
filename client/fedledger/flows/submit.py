"""Submitting updates: encode → store → ``submitUpdate``; or sign (EIP-712) for a relayer.

The CLI's ``submit`` and ``train``, the SDK's ``Task.submit`` (also through a relayer), the
demo's contributors and the tests all come here.

A contributor has one slot per round, so every update is checked before anything is stored or
sent (:func:`check_update`, the one local check) by the rules validators apply to the file
whatever else the round holds, with the validators' own functions:

- ``MALFORMED``: larger than validators read for this model
  (:func:`fedledger.protocol.rounds.max_update_bytes`), not a valid update file, not for this
  task, round and global model, or naming no contributor;
- ``COPIED``: it names another contributor than the address about to submit or sign it (an
  update file names its author, and validators judge anyone else's copy ``COPIED``);
- ``SHAPE_MISMATCH``: tensor names, shapes or dtype differ from the global model's;
- ``NON_FINITE``: a NaN or Inf anywhere;
- for a fixed-point task (a ``fixed_point`` section in its spec): ``MALFORMED`` for an ``int32``
  file of another format, ``OUT_OF_RANGE`` for a float file with a coordinate the format cannot
  hold (named: flat index in the task's tensor order, tensor and element), with the validators'
  own :func:`fedledger.protocol.rounds.fixed_view`.  :func:`encode` quantizes to the task's
  format and writes ``int32`` unless asked for another encoding, refusing out-of-range values
  with the same error.

Each refusal is a :class:`~fedledger.errors.FormatError` that names the verdict it avoids, what
is wrong and what to do.  The round-dependent screens (free riders, norm bounds, outliers)
cannot be judged from one update alone and are the validators'.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from eth_account.signers.local import LocalAccount

from fedledger.chain.ledger import Ledger, SignedUpdate
from fedledger.content.store import ContentStore
from fedledger.errors import ConfigError, FormatError
from fedledger.flows.task import Published, TaskState, global_model, publish
from fedledger.protocol import aggregation as agg
from fedledger.protocol import codec, committee, fixed_deltas, rounds
from fedledger.protocol.fixedpoint import FixedPointFormat, FixedPointRangeError
from fedledger.protocol.verdicts import Verdict


@dataclass(frozen=True)
class Submitted:
    update_id: int
    task_id: int
    round: int
    content_hash: str
    cid: str
    num_samples: int
    tx_hash: str


def encode(
    state: TaskState,
    delta: Mapping[str, np.ndarray],
    *,
    contributor: str,
    encoding: codec.Encoding | None = None,
    extra: Mapping[str, str] | None = None,
    residual: codec.Residual | None = None,
) -> bytes:
    """The update file for ``delta`` against the task's current global model, bound to
    ``contributor``: the address that will submit it (or sign it for a relayer).

    ``encoding`` defaults to the task's: ``int32`` in the task's fixed-point format for a
    fixed-point task (a value out of range raises :class:`FormatError` naming the coordinate
    and the ``OUT_OF_RANGE`` verdict it avoids), ``fp32`` otherwise."""
    fmt = state.spec.fixed_point_format()
    if encoding is None:
        encoding = "fp32" if fmt is None else "int32"
    if encoding == "int32":
        if fmt is None:
            raise ConfigError(
                f"task {state.task_id} has no fixed-point format, so it takes no int32 update",
                hint="use the default encoding (fp32), or fp16, int8 or topk",
            )
        _check_range(delta, fmt)
    return codec.encode_update(
        delta,
        task_id=state.task_id,
        round=state.current_round,
        base_hash=state.global_hash,
        contributor=contributor,
        encoding=encoding,
        extra=extra,
        residual=residual,
        fixed_point=fmt if encoding == "int32" else None,
    )


_RANGE_HINT = (
    "the delta is larger than the task's fixed-point format holds: lower the learning rate or "
    "clip the update (the task spec's fixed_point.frac_bits sets the range)"
)


def _check_range(delta: Mapping[str, np.ndarray], fmt: FixedPointFormat) -> None:
    """Validators' ``OUT_OF_RANGE`` rule on a float delta, flattened in its own tensor order
    (the global model's, for every delta the SDK makes)."""
    layout = agg.TensorLayout.of(delta)
    if layout.matches(delta) is not None:
        return  # not float32 tensors: codec.encode_update says what is wrong
    try:
        fixed_deltas.quantize_delta(delta, layout, fmt)
    except FixedPointRangeError as exc:
        raise _refused(Verdict.OUT_OF_RANGE, exc.message, _RANGE_HINT) from exc


_FILE_HINTS = {
    Verdict.MALFORMED: "train again against the task's current global model (`fedledger "
    "train`, or the SDK: fedledger.connect(...).task(ID).submit(model, num_samples=N))",
    Verdict.COPIED: "submit it with the key of the contributor it names, or rebuild it bound to "
    "your address (codec.encode_update(..., contributor=your address))",
}


def _refused(verdict: Verdict, reason: str, hint: str) -> FormatError:
    return FormatError(f"{reason}; validators judge it {verdict.name}", hint=hint)


def check_tensors(
    base: Mapping[str, np.ndarray], tensors: Mapping[str, np.ndarray], *, what: str = "update"
) -> None:
    """Validators' ``SHAPE_MISMATCH`` and ``NON_FINITE`` rules on ``tensors`` (an update's delta,
    or the trained weights it will be made from) against the global model ``base``."""
    problem = agg.TensorLayout.of(base).matches(tensors)
    if problem is not None:
        raise _refused(
            Verdict.SHAPE_MISMATCH,
            f"the {what} does not fit the task's model: {problem}",
            "train the task's own architecture: task.model() builds it with the global "
            "weights loaded (task.global_tensors() lists its tensor names and shapes)",
        )
    counts = (
        (name, int(arr.size - np.count_nonzero(np.isfinite(arr)))) for name, arr in tensors.items()
    )
    bad = {name: n for name, n in counts if n}
    if bad:
        shown = ", ".join(f"{name} ({n})" for name, n in list(bad.items())[:5])
        raise _refused(
            Verdict.NON_FINITE,
            f"the {what} holds {sum(bad.values())} NaN or Inf values, in {shown}",
            "lower the learning rate or clip the gradients; with mixed precision, scale the "
            "loss (torch.amp.GradScaler); then train the round again",
        )


def check_update(
    state: TaskState,
    data: bytes,
    *,
    contributor: str,
    base: Mapping[str, np.ndarray],
) -> codec.Decoded:
    """Refuse an update file that validators would reject whatever else the round holds (see
    the module docstring): ``base`` is the task's current global model (its tensors), and
    ``contributor`` the address about to submit or sign the file."""
    layout = agg.TensorLayout.of(base)
    limit = rounds.max_update_bytes(layout)
    if len(data) > limit:
        raise _refused(
            Verdict.MALFORMED,
            f"the update file is {len(data)} bytes, more than the {limit} validators read for "
            f"task {state.task_id}'s model ({layout.size} parameters)",
            "is it an update of this task? make it from the task's model (`fedledger train`, "
            "or task.submit(model) in the SDK)",
        )
    try:  # checked, not kept: no copy
        dec = codec.decode(
            data, kind="update", max_bytes=limit, max_elements=layout.size, copy=False
        )
    except FormatError as exc:
        raise _refused(
            Verdict.MALFORMED,
            f"not a fedledger update file: {exc.message}",
            "submit the .safetensors update the SDK makes for this round (task.submit, "
            "codec.encode_update), not a model, data or another file; `fedledger train` "
            "trains and submits in one step",
        ) from exc
    fmt = state.spec.fixed_point_format()
    judged = rounds.check_file(
        dec, state.task_id, state.current_round, state.global_hash, contributor, fixed_point=fmt
    )
    if judged is not None:
        verdict, reason = judged
        raise _refused(verdict, reason, _FILE_HINTS.get(verdict, _FILE_HINTS[Verdict.MALFORMED]))
    tensors: Mapping[str, np.ndarray] = dec.tensors
    if fmt is not None:
        try:
            tensors, _ = rounds.fixed_view(dec, layout, fmt)
        except FixedPointRangeError as exc:
            raise _refused(Verdict.OUT_OF_RANGE, exc.message, _RANGE_HINT) from exc
    check_tensors(base, tensors, what="update file")
    return dec


def _check_samples(state: TaskState, num_samples: int) -> None:
    """The contract's rule, checked before anything is stored or sent: 1 to the task's
    ``maxSamples``."""
    if not 0 < num_samples < 2**64:
        raise ConfigError(f"numSamples must be a positive 64-bit integer, got {num_samples}")
    cap = state.config.max_samples
    if num_samples > cap:
        raise ConfigError(
            f"numSamples {num_samples} is above task {state.task_id}'s maxSamples {cap}",
            hint=f"claim at most {cap}: the task caps the weight one update may claim",
        )


@dataclass(frozen=True)
class Stored:
    """An update checked and in the store: its hash and CID, and the ``tensorRoot`` it is
    recorded with (the root of its fixed-point coordinates; zero for a float task)."""

    published: Published
    tensor_root: str

    @property
    def content_hash(self) -> str:
        return self.published.content_hash

    @property
    def cid(self) -> str:
        return self.published.cid


def store_update(
    store: ContentStore,
    state: TaskState,
    data: bytes,
    *,
    contributor: str,
    base: Mapping[str, np.ndarray] | None = None,
) -> Stored:
    """Check the update (:func:`check_update`), compute its tensor root as validators will
    (:func:`fedledger.protocol.rounds.update_tensor_root`) and put it in the store.  ``base``:
    the global model's tensors when the caller holds them (else they are fetched and checked)."""
    if base is None:
        base = global_model(store, state)
    dec = check_update(state, data, contributor=contributor, base=base)
    root = rounds.update_tensor_root(
        dec, agg.TensorLayout.of(base), state.spec.fixed_point_format()
    )
    if state.spec.privacy_policy().committee:
        data = bytes(seal_update(state, data, contributor=contributor, tensor_root=root))
    return Stored(publish(store, data), root)


def seal_update(state: TaskState, data: bytes, *, contributor: str, tensor_root: str) -> bytearray:
    """A private task's update file sealed to its committee (:attr:`TaskState.committee`): the
    envelope whose hash and CID go on chain."""
    if not state.committee:
        raise ConfigError(
            f"task {state.task_id} is private (committee encryption) but none of its validators "
            "registered an encryption key yet, so nobody could read the update",
            hint="wait until a validator of the task runs `fedledger serve` (it registers its "
            "key on start), then submit again",
        )
    return committee.seal(
        data,
        state.committee,
        task_id=state.task_id,
        round=state.current_round,
        tensor_root=tensor_root,
        contributor=contributor,
    )


def _submitter(ledger: Ledger) -> str:
    if ledger.sender is None:
        raise ConfigError(
            "submitting an update sends a transaction and needs a key", hint="pass --key"
        )
    return ledger.sender.address


def submit(
    ledger: Ledger,
    store: ContentStore,
    state: TaskState,
    data: bytes,
    num_samples: int,
    *,
    base: Mapping[str, np.ndarray] | None = None,
) -> Submitted:
    """Check and store the update and record it on chain; returns its global update id.
    ``base``: the global model's tensors, when the caller holds them already."""
    _check_samples(state, num_samples)
    pub = store_update(store, state, data, contributor=_submitter(ledger), base=base)
    uid = ledger.submit_update(
        state.task_id, state.current_round, pub.content_hash, pub.cid, num_samples, pub.tensor_root
    )
    return Submitted(
        uid, state.task_id, state.current_round, pub.content_hash, pub.cid, num_samples, ""
    )


def sign(
    ledger: Ledger,
    account: LocalAccount,
    store: ContentStore,
    state: TaskState,
    data: bytes,
    num_samples: int,
    *,
    valid_for_s: int = 3600,
    base: Mapping[str, np.ndarray] | None = None,
) -> SignedUpdate:
    """Check and store the update and sign it for a relayer (gasless for the contributor)."""
    _check_samples(state, num_samples)
    pub = store_update(store, state, data, contributor=account.address, base=base)
    deadline = int(time.time()) + valid_for_s
    return ledger.sign_update(
        account,
        state.task_id,
        state.current_round,
        pub.content_hash,
        pub.cid,
        num_samples,
        deadline,
        pub.tensor_root,
    )
