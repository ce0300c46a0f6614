"""Coverage-guided fuzzing of the decoders of untrusted files with atheris: update files
(fedledger.protocol.codec), task specs (fedledger.protocol.taskspec) and verdict files (fedledger.protocol.verdicts), and the bounded
JSON parser under them (fedledger.safejson).

libFuzzer mutates a seed corpus for ``--seconds`` (default 60), guided by the coverage of the
instrumented modules. The seeds are a valid file of every encoding, a model, a task spec and a
verdict file, plus structure-aware extremes (issue #14): headers nested thousands deep, a top-k
``::shape`` of hundreds of dims near 2**62, numbers of a thousand digits, a header of thousands
of tiny values. Every input goes through ``codec.decode`` (in memory),
``codec.read_safetensors_stream`` (streamed), ``TaskSpec.from_bytes`` and ``verdicts.parse``. A
*crash* is any exception other than :class:`FormatError` (a RecursionError included: under
web3's recursion limit it is a SIGSEGV), or an input that takes longer than ``--case-seconds``;
crashes are recorded (deduplicated by exception type and line) and the run goes on.
``-rss_limit_mb`` turns a runaway allocation into a libFuzzer crash report.

Prints a table; the last line is one JSON object (``executions``, ``exec_per_s``, ``crashes``,
``unique_crashes``, ``slow``...); libFuzzer's own progress (coverage) goes to stderr.
Run: ``.venv/bin/python benchmarks/fuzz_codec.py [--seconds 60] [--rss-mb 2048]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import atheris
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(
    include=[
        "fedledger.protocol.codec",
        "fedledger.safejson",
        "fedledger.protocol.taskspec",
        "fedledger.protocol.verdicts",
    ]
):
    from fedledger import safejson  # noqa: E402, F401
    from fedledger.protocol import (
        codec,  # noqa: E402, F401
        verdicts,  # noqa: E402, F401
    )
    from fedledger.protocol.taskspec import TaskSpec  # noqa: E402

from fedledger.errors import FormatError  # noqa: E402
from fedledger.protocol.aggregation import RuleSpec  # noqa: E402

BASE = "0x" + "cd" * 32
WHO = "0x" + "11" * 20
MAX_ELEMENTS = 1 << 16


def seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    delta = {
        "fc.weight": rng.standard_normal((6, 5)).astype(np.float32),
        "fc.bias": rng.standard_normal(6).astype(np.float32),
        "scalar": np.array(0.5, np.float32),
    }
    files = [
        codec.encode_update(
            delta,
            task_id=1,
            round=0,
            base_hash=BASE,
            contributor=WHO,
            encoding=enc,  # type: ignore[arg-type]
        )
        for enc in codec.ENCODINGS
    ]
    return [*files, codec.encode_model(delta, task_id=1, round=0), *json_seeds(), *extremes()]


def json_seeds() -> list[bytes]:
    spec = TaskSpec().to_bytes()
    vf = verdicts.build(
        task_id=1,
        round=0,
        rule=RuleSpec(rule="fedavg"),
        base_model_hash=BASE,
        aggregate_hash=BASE,
        aggregate_cid="bafkreia",
        entries=[],
    ).to_bytes()
    return [spec, vf, spec[:-1] + b',"model_kwargs":' + b'{"a":' * 500]


def _file(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def extremes() -> list[bytes]:
    """Structure-aware seeds: nesting depth, huge integers, huge counts (issue #14)."""
    meta = codec.decode(seeds_topk()).metadata
    shape = np.full(400, 2**62 - 1, "<i8")
    huge_shape = codec.write_safetensors(
        {"w::shape": shape, "w::indices": np.zeros(0, "<i4"), "w::values": np.zeros(0, "<f4")},
        meta,
    )
    return [
        _file(b"{" + b'"a":[' * 800),
        _file(b'{"w":{"dtype":"F32","shape":' + b"[" * 1500 + b"]" * 1500 + b"}}"),
        huge_shape,
        _file(b'{"w":{"dtype":"F32","shape":[' + b"9" * 1000 + b'],"data_offsets":[0,0]}}'),
        _file(b'{"a":[' + b"0," * 1500 + b"0]}"),
    ]


def seeds_topk() -> bytes:
    delta = {"w": np.arange(8, dtype=np.float32)}
    return codec.encode_update(
        delta, task_id=1, round=0, base_hash=BASE, contributor=WHO, encoding="topk"
    )


class Stats:
    def __init__(self, case_seconds: float) -> None:
        self.case_seconds = case_seconds
        self.executions = 0
        self.accepted = 0
        self.refused = 0
        self.crashes = 0
        self.slow = 0
        self.slowest = 0.0
        self.unique: dict[str, dict[str, Any]] = {}
        self.started = time.perf_counter()

    def record_crash(self, data: bytes, exc: BaseException) -> None:
        self.crashes += 1
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        key = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"
        if key not in self.unique:
            self.unique[key] = {"message": str(exc)[:200], "input_hex": data[:256].hex()}


def one_input(stats: Stats, data: bytes, seconds: float) -> None:
    if time.perf_counter() - stats.started >= seconds:
        # libFuzzer leaves with _exit (no atexit): report, then leave the same way
        report(stats, seconds)
        os._exit(1 if stats.unique else 0)
    stats.executions += 1
    start = time.perf_counter()
    try:
        codec.decode(data, max_elements=MAX_ELEMENTS)
        stats.accepted += 1
    except FormatError:
        stats.refused += 1
    except Exception as exc:  # noqa: BLE001 - every other exception is a finding
        stats.record_crash(data, exc)
    try:
        codec.read_safetensors_stream(io.BytesIO(data), len(data))
    except FormatError:
        pass
    except Exception as exc:  # noqa: BLE001
        stats.record_crash(data, exc)
    for decode in (TaskSpec.from_bytes, verdicts.parse):
        try:
            decode(data)
        except FormatError:
            pass
        except Exception as exc:  # noqa: BLE001
            stats.record_crash(data, exc)
    took = time.perf_counter() - start
    stats.slowest = max(stats.slowest, took)
    if took > stats.case_seconds:
        stats.slow += 1


def report(stats: Stats, seconds: float) -> None:
    wall = time.perf_counter() - stats.started
    summary = {
        "benchmark": "fuzz_codec",
        "seconds": round(wall, 1),
        "budget_s": seconds,
        "executions": stats.executions,
        "exec_per_s": round(stats.executions / wall, 1) if wall else 0.0,
        "accepted": stats.accepted,
        "refused": stats.refused,
        "crashes": stats.crashes,
        "unique_crashes": len(stats.unique),
        "slow": stats.slow,
        "slowest_case_ms": round(stats.slowest * 1000, 2),
        "findings": stats.unique,
    }
    rows = [
        ("wall time (s)", f"{wall:.1f}"),
        ("executions", f"{stats.executions}"),
        ("executions / s", f"{summary['exec_per_s']}"),
        ("accepted as valid", f"{stats.accepted}"),
        ("refused (FormatError)", f"{stats.refused}"),
        ("crashes (other exceptions)", f"{stats.crashes}"),
        ("unique crash sites", f"{len(stats.unique)}"),
        (f"cases over {stats.case_seconds:g}s", f"{stats.slow}"),
        ("slowest case (ms)", f"{summary['slowest_case_ms']}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\ncodec fuzzing (atheris, coverage-guided)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v:>12}")
    for key, info in stats.unique.items():
        print(f"  crash: {key}: {info['message']}")
    sys.stdout.flush()
    print(json.dumps(summary), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing budget")
    parser.add_argument("--case-seconds", type=float, default=1.0, help="slow-case threshold")
    parser.add_argument("--rss-mb", type=int, default=2048, help="libFuzzer RSS limit")
    parser.add_argument("--max-len", type=int, default=4096, help="largest input in bytes")
    args = parser.parse_args()

    corpus = Path(tempfile.mkdtemp(prefix="fuzz-codec-"))
    for i, data in enumerate(seeds()):
        (corpus / f"seed{i}").write_bytes(data)
    stats = Stats(args.case_seconds)
    libfuzzer_args = [
        sys.argv[0],
        f"-max_total_time={args.seconds + 30}",  # a backstop: one_input ends the run
        f"-rss_limit_mb={args.rss_mb}",
        f"-max_len={args.max_len}",
        f"-timeout={max(1, int(args.case_seconds * 10))}",
        "-print_final_stats=0",
        str(corpus),
    ]
    os.environ.setdefault("PYTHONHASHSEED", "0")
    atheris.Setup(libfuzzer_args, lambda data: one_input(stats, data, args.seconds))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
