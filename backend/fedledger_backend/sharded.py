"""A round judged and aggregated across Ray workers, each streaming one coordinate range.

docs/scaling.md is the guide.  The arithmetic is :mod:`fedledger.protocol.streaming`'s (exact
integers, so the shards' sums are the whole's); this module only places the passes on a Ray
cluster (https://docs.ray.io): a local one started here with ``num_cpus``, or the cluster at
``address`` (``ray start --head`` on one machine, ``ray start --address=HEAD:6379`` on the
others).  Workers open the content store themselves, by location, and read their byte ranges
from it; a task's arguments are small (the store's location, a coordinate range, the updates'
:class:`~fedledger.protocol.streaming.UpdateFile` spans, the rule and its plan), and its
answer is a shard's statistics or its part of the aggregate.

* :func:`judge_round_sharded`: a whole round judged, the same :class:`~fedledger.protocol.rounds.Judgement`
  to the byte as :func:`fedledger.protocol.rounds.judge_round`'s
  (:func:`fedledger.protocol.streaming.judge_round_streamed` on a :class:`RayRunner`);
  :class:`ShardedJudge` is that function as the validator service calls it, configured by
  :class:`ShardedSettings` (``FEDLEDGER_SHARDED_WORKERS``, ``FEDLEDGER_RAY_ADDRESS``);
* :func:`inspect_round_sharded`: every update's file checked (sha256, header, the file's claims,
  tensor root, the screen's norm), updates spread over the workers;
* :func:`aggregate_round_sharded`: the exact aggregate, bit for bit the one
  :func:`fedledger.protocol.exact_rules.aggregate_exact` computes from whole vectors.

Ray is an optional dependency (``pip install 'fedledger[ray]'``), imported when first used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedledger.content.blockstore import Blockstore
from fedledger.content.store import ContentStore, RangeReadable
from fedledger.errors import ConfigError, FedledgerError
from fedledger.protocol import aggregation as agg
from fedledger.protocol import rounds, streaming
from fedledger.protocol.exact_rules import ExactRule, Plan
from fedledger.protocol.fixedpoint import FixedPointFormat, Int32Vector
from fedledger.protocol.rounds import Judgement
from fedledger.protocol.streaming import (
    Inspection,
    ShardStatistics,
    StreamedAggregate,
    UpdateFile,
)

T = TypeVar("T")

__all__ = [
    "RayRunner",
    "ShardedAggregate",
    "ShardedJudge",
    "ShardedSettings",
    "aggregate_round_sharded",
    "connect",
    "inspect_round_sharded",
    "judge_round_sharded",
    "open_files_sharded",
    "open_location",
    "store_location",
]


# --------------------------------------------------------------------------- the store, by location


def store_location(store: ContentStore | RangeReadable | str | Path) -> str:
    """How a worker finds ``store``: the embedded store's root directory, or a Kubo RPC URL.

    On a cluster of several machines the directory must be the same path on every one (a
    shared filesystem), or use a Kubo node that every machine reaches.
    """
    if isinstance(store, Blockstore):
        return str(store.root)
    url = getattr(store, "url", None)
    if isinstance(url, str):
        return url
    if isinstance(store, str | Path):
        return str(store)
    raise ConfigError(
        f"{store!r} cannot be opened by a worker",
        hint="pass the embedded store (or its directory) or a Kubo store (or its RPC URL)",
    )


_STORES: dict[str, streaming.RangeStore] = {}


def open_location(location: str) -> streaming.RangeStore:
    """The store at ``location`` (:func:`store_location`), opened once per process."""
    known = _STORES.get(location)
    if known is not None:
        return known
    store: streaming.RangeStore
    if location.startswith(("http://", "https://")):
        from fedledger.content.kubo import KuboStore

        store = KuboStore(location)
    else:
        root = Path(location)
        if not (root / "blocks").is_dir():
            raise ConfigError(
                f"no embedded content store at {location} on this machine",
                hint="give every worker the same store directory (a shared filesystem) or a "
                "Kubo URL that every machine reaches",
            )
        store = Blockstore(root)
    _STORES[location] = store
    return store


# --------------------------------------------------------------------------- Ray


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "the sharded validator runs on Ray, which is not installed",
            hint="pip install 'fedledger[ray]' on every machine of the cluster",
        ) from exc
    return ray


def connect(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (``HEAD:6379``; ``"auto"``: the one this machine
    belongs to), or start a local one with ``num_cpus`` CPUs (all by default).  Does nothing
    when this process is already connected."""
    ray = _ray()
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if address:
        ray.init(address=address, **options)
    else:
        # Ray runs its workers at nice 15 by default; judging a round is the validator's own
        # work, so its workers compete for the CPU as the validator itself would.
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            _system_config={"worker_niceness": 0},
            **options,
        )


_REMOTE: dict[str, Any] = {}


def _remote(fn: Callable[..., Any]) -> Any:
    """``fn`` as a Ray task needing one CPU (each task streams with one thread)."""
    task = _REMOTE.get(fn.__name__)
    if task is None:
        task = _ray().remote(num_cpus=1)(fn)
        _REMOTE[fn.__name__] = task
    return task


def _gather(refs: list[Any]) -> list[Any]:
    """``ray.get``, with an error a task raised on purpose re-raised as itself."""
    ray = _ray()
    try:
        return list(ray.get(refs))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, FedledgerError):
            raise exc.cause from None
        raise


# --------------------------------------------------------------------------- what the workers run


def _readers(location: str, files: Sequence[UpdateFile]) -> list[streaming.ColumnReader]:
    store = open_location(location)
    return [streaming.ColumnReader(store.open_range(f.cid), f) for f in files]


def _inspect_task(
    location: str, refs: list[rounds.UpdateRef], ctx: streaming.RoundContext
) -> list[Inspection]:
    store = open_location(location)
    return [streaming.inspect_ref(store, r, ctx) for r in refs]


def _open_task(
    location: str, cids: list[str], layout: agg.TensorLayout, max_bytes: int
) -> list[UpdateFile]:
    store = open_location(location)
    return [
        streaming.open_update(store.open_range(c), c, layout, max_bytes=max_bytes) for c in cids
    ]


def _statistics_task(
    location: str,
    files: list[UpdateFile],
    a: int,
    b: int,
    gram: bool,
    multipliers: tuple[int | None, ...] | None,
    block_bytes: int,
) -> ShardStatistics:
    return streaming.shard_statistics(
        _readers(location, files),
        a,
        b,
        gram=gram,
        multipliers=multipliers,
        columns=streaming.block_columns(len(files), block_bytes),
    )


def _aggregate_task(
    location: str,
    files: list[UpdateFile],
    a: int,
    b: int,
    rule: ExactRule,
    num_samples: list[int],
    plan: Plan | None,
    block_bytes: int,
) -> tuple[Int32Vector, float, float]:
    """The shard's part of the aggregate, and the task's wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    part = streaming.aggregate_shard(
        _readers(location, files), a, b, rule, num_samples, plan, block_bytes=block_bytes
    )
    return part, time.perf_counter() - wall, time.process_time() - cpu


def _screen_gram_task(
    location: str,
    files: list[UpdateFile],
    a: int,
    b: int,
    exps: list[int],
    fmt: FixedPointFormat,
) -> list[list[int]]:
    return streaming.screen_gram_shard(_readers(location, files), a, b, exps, fmt)


def _center_task(
    location: str, files: list[UpdateFile], a: int, b: int, fmt: FixedPointFormat, block_bytes: int
) -> agg.Vector:
    columns = streaming.block_columns(len(files), block_bytes)
    return streaming.center_shard(_readers(location, files), a, b, fmt, columns=columns)


def _center_folds_task(
    location: str, files: list[UpdateFile], center: agg.Vector, fmt: FixedPointFormat
) -> list[tuple[float, float]]:
    return [streaming.center_folds(r, center, fmt) for r in _readers(location, files)]


# --------------------------------------------------------------------------- the driver


def _batches(items: Sequence[T], parts: int) -> list[list[T]]:
    parts = max(1, min(parts, len(items)))
    step = -(-len(items) // parts)
    return [list(items[i : i + step]) for i in range(0, len(items), step)]


def _flat(parts: list[list[T]]) -> list[T]:
    return [x for part in parts for x in part]


@dataclass
class RayRunner:
    """:class:`fedledger.protocol.streaming.ShardRunner` on Ray: one task per coordinate shard
    and pass, and per-update passes in ``4 * workers`` batches of updates."""

    location: str
    workers: int = 2
    block_bytes: int = streaming.DEFAULT_BLOCK_BYTES
    task_seconds: list[tuple[float, float]] = field(default_factory=list)
    """(wall, CPU) seconds of each aggregate task of the last pass, in shard order."""

    def _put(self, files: Sequence[UpdateFile]) -> Any:
        return _ray().put(list(files))  # sent once, shared by every task of the pass

    def inspect(
        self, refs: Sequence[rounds.UpdateRef], ctx: streaming.RoundContext
    ) -> list[Inspection]:
        task = _remote(_inspect_task)
        batches = _batches(refs, 4 * self.workers)
        return _flat(_gather([task.remote(self.location, b, ctx) for b in batches]))

    def statistics(
        self,
        files: Sequence[UpdateFile],
        shards: Sequence[tuple[int, int]],
        *,
        gram: bool,
        multipliers: Sequence[int | None] | None,
    ) -> list[ShardStatistics]:
        task, ref = _remote(_statistics_task), self._put(files)
        mult = None if multipliers is None else tuple(multipliers)
        return _gather(
            [task.remote(self.location, ref, a, b, gram, mult, self.block_bytes) for a, b in shards]
        )

    def aggregate(
        self,
        files: Sequence[UpdateFile],
        shards: Sequence[tuple[int, int]],
        rule: ExactRule,
        num_samples: Sequence[int],
        plan: Plan | None,
    ) -> list[Int32Vector]:
        task, ref, ns = _remote(_aggregate_task), self._put(files), list(num_samples)
        answers = _gather(
            [
                task.remote(self.location, ref, a, b, rule, ns, plan, self.block_bytes)
                for a, b in shards
            ]
        )
        self.task_seconds = [(wall, cpu) for _, wall, cpu in answers]
        return [part for part, _, _ in answers]

    def screen_gram(
        self,
        files: Sequence[UpdateFile],
        shards: Sequence[tuple[int, int]],
        exps: Sequence[int],
        fmt: FixedPointFormat,
    ) -> list[list[list[int]]]:
        task, ref, ex = _remote(_screen_gram_task), self._put(files), list(exps)
        return _gather([task.remote(self.location, ref, a, b, ex, fmt) for a, b in shards])

    def center(
        self, files: Sequence[UpdateFile], shards: Sequence[tuple[int, int]], fmt: FixedPointFormat
    ) -> list[agg.Vector]:
        task, ref = _remote(_center_task), self._put(files)
        return _gather(
            [task.remote(self.location, ref, a, b, fmt, self.block_bytes) for a, b in shards]
        )

    def center_folds(
        self, files: Sequence[UpdateFile], center: agg.Vector, fmt: FixedPointFormat
    ) -> list[tuple[float, float]]:
        task, ref = _remote(_center_folds_task), _ray().put(center)  # one copy for all
        batches = _batches(files, 4 * self.workers)
        return _flat(_gather([task.remote(self.location, b, ref, fmt) for b in batches]))


@dataclass(frozen=True)
class ShardedAggregate(StreamedAggregate):
    """:class:`~fedledger.protocol.streaming.StreamedAggregate` plus the update files read and
    the seconds it took on the cluster."""

    files: tuple[UpdateFile, ...] = ()
    seconds: float = 0.0
    shard_seconds: tuple[tuple[float, float], ...] = ()
    """(wall, CPU) seconds of each shard's aggregate task, in shard order."""


def inspect_round_sharded(
    store: ContentStore | RangeReadable | str | Path,
    refs: Sequence[rounds.UpdateRef],
    *,
    task_id: int,
    round_: int,
    base_hash: str,
    layout: agg.TensorLayout,
    fmt: FixedPointFormat,
    workers: int = 2,
    address: str | None = None,
    num_cpus: int | None = None,
    block_bytes: int = streaming.DEFAULT_BLOCK_BYTES,
) -> list[Inspection]:
    """Every update's file checked as the in-memory judge checks it (in the order of ``refs``):
    :func:`fedledger.protocol.streaming.inspect_ref`, the updates spread over ``4 * workers``
    tasks."""
    if not refs:
        return []
    connect(address, num_cpus=num_cpus)
    location = store_location(store)
    open_location(location)  # fail here, not on every worker, when it is not a store
    ctx = streaming.RoundContext(task_id, round_, base_hash.lower(), layout, fmt)
    return RayRunner(location, workers, block_bytes).inspect(refs, ctx)


def open_files_sharded(
    store: ContentStore | RangeReadable | str | Path,
    cids: Sequence[str],
    layout: agg.TensorLayout,
    *,
    workers: int = 2,
    address: str | None = None,
    num_cpus: int | None = None,
) -> list[UpdateFile]:
    """The :class:`UpdateFile` of already judged updates, from their headers alone; a
    :class:`~fedledger.errors.FormatError` names an update whose header is refused."""
    connect(address, num_cpus=num_cpus)
    location = store_location(store)
    open_location(location)
    task = _remote(_open_task)
    max_bytes = rounds.max_update_bytes(layout)
    batches = _batches(list(cids), 4 * workers)
    return _flat(_gather([task.remote(location, b, layout, max_bytes) for b in batches]))


def aggregate_round_sharded(
    store: ContentStore | RangeReadable | str | Path,
    updates: Sequence[str | UpdateFile],
    rule: ExactRule,
    layout: agg.TensorLayout,
    *,
    num_samples: Sequence[int] | None = None,
    workers: int = 2,
    address: str | None = None,
    num_cpus: int | None = None,
    block_bytes: int = streaming.DEFAULT_BLOCK_BYTES,
) -> ShardedAggregate:
    """The exact aggregate of a round's accepted ``updates`` (updateId order: CIDs, or the
    :class:`UpdateFile` that :func:`inspect_round_sharded` returned), over ``workers`` shards.

    ``rule`` is the task's exact rule (:meth:`~fedledger.protocol.exact_rules.ExactRule.from_rule_spec`
    of its spec and fixed-point format); ``num_samples`` weigh fedavg, capped by the rule.  The
    result is the same, bit for bit, for any ``workers`` and equal to
    ``exact_rules.aggregate_exact(rule, vectors, num_samples)`` on the whole vectors.
    """
    if not updates:
        raise ValueError("no updates to aggregate")
    started = time.perf_counter()
    connect(address, num_cpus=num_cpus)
    location = store_location(store)
    cids = [u for u in updates if isinstance(u, str)]
    opened = iter(open_files_sharded(location, cids, layout, workers=workers) if cids else [])
    files = [u if isinstance(u, UpdateFile) else next(opened) for u in updates]
    size = streaming.check_files(files)
    if size != layout.size:
        raise ValueError(f"the updates have {size} coordinates, the model {layout.size}")
    ns = [1] * len(files) if num_samples is None else list(num_samples)
    if len(ns) != len(files):
        raise ValueError(f"{len(files)} updates but {len(ns)} sample counts")
    runner = RayRunner(location, workers, block_bytes)
    result = streaming.aggregate_round(runner, files, rule, ns, streaming.split(size, workers))
    return ShardedAggregate(
        aggregate=result.aggregate,
        plan=result.plan,
        statistics=result.statistics,
        shards=result.shards,
        files=tuple(files),
        seconds=time.perf_counter() - started,
        shard_seconds=tuple(runner.task_seconds),
    )


def judge_round_sharded(
    store: ContentStore,
    *,
    workers: int = 2,
    address: str | None = None,
    num_cpus: int | None = None,
    block_bytes: int = streaming.DEFAULT_BLOCK_BYTES,
    **judge: Any,
) -> Judgement:
    """:func:`fedledger.protocol.rounds.judge_round` (the same keyword arguments in ``judge``)
    with every pass over the updates on Ray: ``workers`` coordinate shards, each Ray worker
    reading its byte ranges from ``store`` itself.  The same Judgement, to the byte, for any
    ``workers`` (:func:`fedledger.protocol.streaming.judge_round_streamed`, which says what it
    leaves to the in-memory judge)."""
    connect(address, num_cpus=num_cpus)
    location = store_location(store)
    open_location(location)
    runner = RayRunner(location, workers, block_bytes)
    return streaming.judge_round_streamed(store, runner, shards=workers, **judge)


class ShardedSettings(BaseSettings):
    """How the validator service judges rounds (environment ``FEDLEDGER_*``).

    ``sharded_workers`` 0 (the default) judges in memory (:func:`~fedledger.protocol.rounds.judge_round`);
    above 0, every round of a fixed-point task is judged on Ray with that many coordinate
    shards (:func:`judge_round_sharded`), on the cluster at ``ray_address`` (``HEAD:6379``, or
    ``auto``) or, without one, on a Ray instance started on this machine with
    ``ray_num_cpus`` CPUs (all by default).
    """

    model_config = SettingsConfigDict(env_prefix="FEDLEDGER_", extra="ignore")

    sharded_workers: int = Field(default=0, ge=0)
    ray_address: str | None = None
    ray_num_cpus: int | None = Field(default=None, ge=1)

    @classmethod
    def from_env(cls) -> ShardedSettings:
        """The settings in this process's environment; :class:`~fedledger.errors.ConfigError`
        naming the variable for a value that is not one."""
        try:
            return cls()
        except ValidationError as exc:
            bad = "; ".join(
                f"FEDLEDGER_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(
                f"bad sharded-judging setting ({bad})",
                hint="FEDLEDGER_SHARDED_WORKERS is a count (0: judge in memory), "
                "FEDLEDGER_RAY_NUM_CPUS a positive count",
            ) from None

    def judge(self) -> Callable[..., Judgement]:
        """The judge these settings name: ``judge_round``, or a :class:`ShardedJudge`."""
        if self.sharded_workers == 0:
            return rounds.judge_round
        return ShardedJudge(self.sharded_workers, self.ray_address, self.ray_num_cpus)


@dataclass(frozen=True)
class ShardedJudge:
    """``judge_round``'s signature, judged by :func:`judge_round_sharded`."""

    workers: int
    address: str | None = None
    num_cpus: int | None = None

    def __call__(self, store: ContentStore, **judge: Any) -> Judgement:
        return judge_round_sharded(
            store, workers=self.workers, address=self.address, num_cpus=self.num_cpus, **judge
        )
