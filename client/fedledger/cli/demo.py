"""``fedledger demo``: the whole mission on embedded defaults, in one command.

A local anvil devnet, TrainingLedger deployed from the compiled artifact, the embedded content
store, SQLite, encrypted keystores for every party; a task on ``load_digits`` with quorum 2;
N contributor processes (each its own key and its own Dirichlet(α) share), k of them attacking;
two validators, each a ``fedledger serve`` process with its own key and database, judging and
attesting every round; the first one's REST API and dashboard served throughout.  The demo reads
every result as a user would, over that REST API and from the chain, never from the service's
tables (the SDK never imports the service).  It ends with a table per round, what became of the
attackers' updates, a centrally trained baseline, a full ``verify`` and a report (markdown +
PNG) in the data dir.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedledger.errors import FedledgerError

ATTACK_PARAMS: dict[str, dict[str, Any]] = {
    "sign_flip": {"scale": 1.0},
    "scaling": {"factor": 10.0},
    "gaussian_noise": {},
    "label_flip": {},
    "norm_preserving": {},
    "free_rider": {},
}


@dataclass
class DemoConfig:
    contributors: int = 6
    attackers: int = 2
    attack: str = "sign_flip"
    rounds: int = 5
    rule: str = "multi_krum"
    alpha: float = 0.5
    port: int = 8000
    home: Path = Path.home() / ".fedledger" / "demo"
    keep_serving: bool = False
    # Local recipe, tuned on this split (benchmarks/experiments.py): plain SGD at lr 0.5 for 3
    # epochs gets within a few points of central training in 5 rounds while honest updates still
    # agree enough (cosine to the consensus ~0.3-0.7) for a flipped update to stand out.  Slower
    # recipes (the old lr 0.1 x 2 epochs) leave honest non-IID updates near-orthogonal, where a
    # sign flip is statistically an honest update; faster ones converge early, after which the
    # same happens.
    epochs: int = 3
    lr: float = 0.5
    optimizer: str = "sgd"
    batch_size: int = 32
    encoding: str = "fp32"
    round_timeout_s: float = 180.0
    seed: int = 0
    quiet: bool = False


@dataclass
class RoundStats:
    round: int
    submitted: int
    accepted: int
    rejected: dict[str, int]
    accuracy: float | None
    gas: int
    attackers_rejected: int
    attackers_total: int
    honest_rejected: int
    seconds: float
    attesters: list[str] = field(default_factory=list)  # validators that attested the round


@dataclass
class DemoResult:
    ok: bool
    rounds: list[RoundStats] = field(default_factory=list)
    final_accuracy: float | None = None
    centralized_accuracy: float | None = None
    verify_ok: bool = False
    verify_problems: list[str] = field(default_factory=list)
    report_path: Path | None = None
    plot_path: Path | None = None
    api_url: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "final_accuracy": self.final_accuracy,
            "centralized_accuracy": self.centralized_accuracy,
            "verify_ok": self.verify_ok,
            "verify_problems": self.verify_problems,
            "rounds": [r.__dict__ for r in self.rounds],
            "report": str(self.report_path),
            "plot": str(self.plot_path),
        }


def rule_spec(rule: str, n: int, attackers: int) -> dict[str, Any]:
    """Rule parameters that tolerate the configured number of attackers."""
    f = max(attackers, 1)
    if rule == "krum":
        return {"rule": "krum", "f": f}
    if rule == "multi_krum":
        return {"rule": "multi_krum", "f": f, "m": max(1, n - f)}
    if rule == "trimmed_mean":
        return {"rule": "trimmed_mean", "beta": min(0.45, max(0.1, attackers / max(n, 1)))}
    return {"rule": rule}


# -- contributor processes --------------------------------------------------------------------


def _attack_params(attack: str | None, index: int) -> dict[str, Any]:
    params = dict(ATTACK_PARAMS.get(attack or "", {}))
    if attack == "gaussian_noise":
        params["seed"] = index  # each attacker its own noise, not copies of one another's
    return params


def _largest_share(n: int, alpha: float, seed: int) -> int:
    """The task's ``maxSamples``: the largest share any demo contributor trains on, so no
    contributor's claim to the fedavg weight can exceed what the owner knows it holds."""
    from fedledger.learning.data import load_dataset, partition_dirichlet, partition_iid

    y = load_dataset("digits", seed=seed).y_train
    parts = partition_dirichlet(y, n, alpha, seed) if alpha > 0 else partition_iid(y, n, seed)
    return max(1, max(len(p) for p in parts))


def _contributor_main(args: dict[str, Any]) -> None:
    """One contributor, in its own process: wait for each round, train, submit."""
    import torch

    torch.set_num_threads(1)
    from fedledger.chain.keys import load_key
    from fedledger.chain.ledger import Ledger, connect
    from fedledger.content.store import open_store
    from fedledger.flows.contribute import ContributorOptions, contribute
    from fedledger.flows.local_data import partition_share

    acct = load_key(Path(args["keystore"]), args["key"], args["password"])
    w3 = connect(args["rpc"])
    led = Ledger(w3, args["contract"], from_block=args["from_block"]).with_account(acct)
    store = open_store(None, Path(args["home"]))
    local = partition_share("digits", args["index"], args["n"], args["alpha"], args["seed"])
    opts = ContributorOptions(
        encoding=args["encoding"],
        attack=args["attack"],
        attack_params=_attack_params(args["attack"], args["index"]),
        seed=args["index"] + 1,
    )
    task_id = args["task_id"]
    for rnd in range(args["rounds"]):
        deadline = time.monotonic() + args["timeout"]
        while led.current_round(task_id) < rnd:
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
        if led.current_round(task_id) != rnd or led.has_submitted(task_id, rnd, acct.address):
            continue
        try:
            contribute(led, store, task_id, local, opts)
        except FedledgerError as exc:
            print(f"contributor {args['index']}: round {rnd}: {exc}", flush=True)


# -- orchestration ----------------------------------------------------------------------------


def run_demo(cfg: DemoConfig, console: Console | None = None) -> DemoResult:  # noqa: C901
    from fedledger.chain.devnet import dev_private_keys, free_port, start_anvil
    from fedledger.chain.keys import DEV_SCRYPT_N, load_key, new_key
    from fedledger.chain.ledger import Ledger, connect
    from fedledger.content.store import open_store
    from fedledger.flows.task import create_task
    from fedledger.flows.verify import verify_task
    from fedledger.learning.models import build_task_model, state_to_numpy
    from fedledger.protocol.taskspec import TaskSpec, TrainingParams

    con = console or Console()
    say = (lambda *a, **k: None) if cfg.quiet else con.print
    if cfg.attackers < 0 or cfg.attackers > cfg.contributors or cfg.contributors < 1:
        raise FedledgerError("need 1 or more contributors and 0 <= attackers <= contributors")
    if cfg.attack not in ATTACK_PARAMS:
        raise FedledgerError(
            f"unknown attack {cfg.attack!r}; choose from {', '.join(ATTACK_PARAMS)}"
        )
    home = Path(cfg.home)
    _fresh_demo_dir(home)
    keystore = home / "keystore"
    # The keystores' password lives in memory, handed to the contributor processes through their
    # spawn pipe and to the validator nodes in their environment; never in a file or argv.
    password = secrets.token_urlsafe(24)
    n, k = cfg.contributors, cfg.attackers
    t0 = time.monotonic()

    devnet = start_anvil(accounts=n + 3, log_path=home / "anvil.log")
    services: list[ServiceProcess] = []
    procs: list[Any] = []
    result = DemoResult(ok=False)
    try:
        keys = dev_private_keys(n + 3)
        names = ["owner", "validator-1", "validator-2"] + [f"contributor-{i}" for i in range(n)]
        for name, pk in zip(names, keys, strict=True):
            new_key(keystore, name, password, private_key=pk, scrypt_n=DEV_SCRYPT_N)
        owner = load_key(keystore, "owner", password)
        v1 = load_key(keystore, "validator-1", password)
        v2 = load_key(keystore, "validator-2", password)
        contributors = [load_key(keystore, f"contributor-{i}", password) for i in range(n)]
        attackers: set[str] = {str(c.address) for c in contributors[n - k :]}

        w3 = connect(devnet.url)
        ledger = Ledger.deploy(w3, owner, home / "deployments")
        store = open_store(None, home)
        spec = TaskSpec(
            model="mlp_digits",
            dataset="digits",
            seed=cfg.seed,
            training=TrainingParams(
                epochs=cfg.epochs,
                lr=cfg.lr,
                batch_size=cfg.batch_size,
                optimizer=cfg.optimizer,
            ),
            aggregation=rule_spec(cfg.rule, n, k),
        )
        initial = state_to_numpy(build_task_model(spec))
        task_id = create_task(
            ledger,
            store,
            spec,
            initial,
            max_samples=_largest_share(n, cfg.alpha, cfg.seed),
            min_updates=n,
            max_updates=n,
            quorum=2,
        )
        for c in contributors:
            ledger.add_contributor(task_id, c.address)
        ledger.add_validator(task_id, v1.address)
        ledger.add_validator(task_id, v2.address)

        api_port = _port_or_free(cfg.port)
        for i in (1, 2):
            services.append(
                ServiceProcess.start(
                    home=home,
                    key=f"validator-{i}",
                    rpc_url=devnet.url,
                    contract=ledger.address,
                    port=api_port if i == 1 else free_port(),
                    evaluate=(i == 1),
                    password=password,
                )
            )
        for svc in services:
            svc.wait_ready()
        rest = services[0].rest
        result.api_url = rest.url
        say(
            f"[bold]fedledger demo[/]: devnet {devnet.url}, contract {ledger.address}, task {task_id}"
        )
        say(f"REST API and dashboard: [bold cyan]{rest.url}/[/]  (OpenAPI docs at {rest.url}/docs)")
        say(
            f"{n} contributors ({k} attacking with {cfg.attack}), 2 validators (quorum 2), "
            f"rule {cfg.rule}, {cfg.rounds} rounds; data dir {home}"
        )

        ctx = mp.get_context("spawn")
        for i, c in enumerate(contributors):
            args = {
                "keystore": str(keystore),
                "key": f"contributor-{i}",
                "password": password,
                "rpc": devnet.url,
                "contract": ledger.address,
                "from_block": ledger.from_block,
                "home": str(home),
                "index": i,
                "n": n,
                "alpha": cfg.alpha,
                "seed": cfg.seed,
                "task_id": task_id,
                "rounds": cfg.rounds,
                "attack": cfg.attack if c.address in attackers else None,
                "encoding": cfg.encoding,
                "timeout": cfg.round_timeout_s,
            }
            p = ctx.Process(
                target=_contributor_main, args=(args,), name=f"contributor-{i}", daemon=True
            )
            p.start()
            procs.append(p)

        for rnd in range(cfg.rounds):
            r0 = time.monotonic()
            deadline = r0 + cfg.round_timeout_s
            while ledger.current_round(task_id) <= rnd:
                if time.monotonic() > deadline:
                    raise FedledgerError(
                        f"round {rnd} was not finalised within {cfg.round_timeout_s:.0f}s"
                    )
                time.sleep(0.2)
            _wait_projected(rest, task_id, rnd)
            stats = _round_stats(rest, w3, task_id, rnd, attackers, time.monotonic() - r0)
            result.rounds.append(stats)
            acc = f"{stats.accuracy:.3f}" if stats.accuracy is not None else "-"
            say(
                f"round {rnd}: {stats.submitted} submitted, {stats.accepted} accepted, "
                f"rejected {stats.rejected or '{}'}, accuracy {acc}, gas {stats.gas:,}"
            )

        result.final_accuracy = result.rounds[-1].accuracy if result.rounds else None
        result.centralized_accuracy = _centralized(spec, cfg)
        report = verify_task(ledger, store, task_id)
        result.verify_ok, result.verify_problems = report.ok, report.problems
        attack_rows = _attacker_rows(rest, task_id, attackers)
        result.report_path, result.plot_path = _write_report(home, cfg, result, attack_rows)
        _print_summary(con, cfg, result, attack_rows)
        honest_ok = all(r.honest_rejected <= max(1, n // 10) for r in result.rounds)
        caught = all(r.attackers_rejected == r.attackers_total for r in result.rounds)
        result.ok = len(result.rounds) == cfg.rounds and result.verify_ok and caught and honest_ok
        say(
            f"done in {time.monotonic() - t0:.0f}s; report {result.report_path}, plot {result.plot_path}"
        )
        (home / "result.json").write_text(json.dumps(result.to_json(), indent=2, default=str))
        if cfg.keep_serving:
            say(f"serving the dashboard at {rest.url}/ until Ctrl-C")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return result
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(timeout=5)
        for svc in services:
            svc.stop()
        devnet.stop()


MARKER = ".fedledger-demo"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _fresh_demo_dir(home: Path) -> None:
    """Empty the demo's own data dir; never delete a directory the demo did not create."""
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists():
            raise FedledgerError(
                f"{home} exists and was not made by `fedledger demo`; refusing to delete it",
                hint="pass another --home or remove it yourself",
            )
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("data dir of `fedledger demo`: emptied at every run\n")


def _port_or_free(port: int) -> int:
    """``port`` if it is free on loopback, else any free port (the address is printed)."""
    import socket

    from fedledger.chain.devnet import free_port

    if port == 0:
        return free_port()
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


@dataclass
class Rest:
    """The REST API of one ``fedledger serve``, read as any client would (answers parsed
    within bounds)."""

    url: str
    timeout_s: float = 30.0

    def get(self, path: str, **params: Any) -> Any:
        import httpx

        from fedledger import safejson

        try:
            resp = httpx.get(self.url + path, params=params, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise FedledgerError(f"the demo's service at {self.url} did not answer: {exc}") from exc
        if resp.status_code >= 400:
            raise FedledgerError(
                f"GET {path} answered {resp.status_code}: {resp.text[:300]}",
                hint="the service's log is in the demo's data dir",
            )
        return safejson.loads(resp.content, what=f"answer to GET {path}", max_bytes=64 << 20)

    def pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged listing, following ``next_cursor``."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self.get(path, limit=200, **params, **({"cursor": cursor} if cursor else {}))
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items


@dataclass
class ServiceProcess:
    """One validator node: ``fedledger serve --key validator-N`` as its own process, its log
    in ``<home>/validator-N.log``, its index in ``<home>/validator-N.db``."""

    name: str
    proc: subprocess.Popen[bytes]
    rest: Rest
    log_path: Path

    @classmethod
    def start(
        cls,
        *,
        home: Path,
        key: str,
        rpc_url: str,
        contract: str,
        port: int,
        evaluate: bool,
        password: str,
    ) -> ServiceProcess:
        log_path = home / f"{key}.log"
        cmd = [
            sys.executable,
            "-m",
            "fedledger",
            "serve",
            "--key",
            key,
            "--port",
            str(port),
            "--rpc-url",
            rpc_url,
            "--contract",
            contract,
            "--home",
            str(home),
            "--keystore",
            str(home / "keystore"),
            "--db",
            f"sqlite:///{home / f'{key}.db'}",
            "--eval-dataset" if evaluate else "--no-eval-dataset",
        ]
        with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(  # noqa: S603 - our own CLI, arguments we built
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "FEDLEDGER_PASSWORD": password},
            )
        return cls(key, proc, Rest(f"http://127.0.0.1:{port}"), log_path)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Until ``GET /health`` answers; a process that exits first fails with its log's tail."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise FedledgerError(
                    f"`fedledger serve --key {self.name}` exited with {self.proc.returncode}: "
                    + self._tail(),
                    hint=f"its whole log is {self.log_path}",
                )
            try:
                self.rest.get("/health")
                return
            except FedledgerError:
                if time.monotonic() > deadline:
                    raise FedledgerError(
                        f"`fedledger serve --key {self.name}` did not answer within "
                        f"{timeout_s:.0f}s",
                        hint=f"its log is {self.log_path}",
                    ) from None
                time.sleep(0.2)

    def _tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (the service shuts its worker down), then SIGKILL if it does not exit."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)


def _wait_projected(rest: Rest, task_id: int, rnd: int, timeout: float = 60.0) -> None:
    """Until the round's verdicts and its model's accuracy show over REST."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = rest.get(f"/tasks/{task_id}/rounds/{rnd}")
        if (
            r["status"] == "finalized"
            and not r["counts"].get("PENDING")
            and r["accuracy"] is not None
        ):
            return
        time.sleep(0.1)


def _round_stats(
    rest: Rest, w3: Any, task_id: int, rnd: int, attackers: set[str], secs: float
) -> RoundStats:
    rows = rest.pages("/contributions", task_id=task_id, round=rnd)
    r = rest.get(f"/tasks/{task_id}/rounds/{rnd}")
    atts = r["attestations"]
    txs = {c["tx_hash"] for c in rows} | {a["tx_hash"] for a in atts}
    gas = sum(int(w3.eth.get_transaction_receipt(h)["gasUsed"]) for h in txs)
    rejected: dict[str, int] = {}
    for c in rows:
        if c["status"] != "ACCEPTED":
            rejected[c["status"]] = rejected.get(c["status"], 0) + 1
    att = [c for c in rows if c["contributor"] in attackers]
    hon = [c for c in rows if c["contributor"] not in attackers]
    return RoundStats(
        round=rnd,
        submitted=len(rows),
        accepted=sum(c["status"] == "ACCEPTED" for c in rows),
        rejected=rejected,
        accuracy=r["accuracy"],
        gas=gas,
        attackers_rejected=sum(c["status"] != "ACCEPTED" for c in att),
        attackers_total=len(att),
        honest_rejected=sum(c["status"] != "ACCEPTED" for c in hon),
        seconds=secs,
        attesters=sorted({a["validator"] for a in atts}),
    )


def _attacker_rows(rest: Rest, task_id: int, attackers: set[str]) -> list[dict[str, Any]]:
    return [
        {k: c[k] for k in ("update_id", "round", "contributor", "status", "reason")}
        for c in rest.pages("/contributions", task_id=task_id)
        if c["contributor"] in attackers
    ]


def _centralized(spec: Any, cfg: DemoConfig) -> float:
    from fedledger.learning.data import load_dataset
    from fedledger.learning.models import build_task_model
    from fedledger.learning.train import train_centralized

    ds = load_dataset(spec.dataset, seed=spec.seed)
    model = build_task_model(spec)
    res = train_centralized(
        model,
        ds.X_train,
        ds.y_train,
        ds.X_test,
        ds.y_test,
        epochs=cfg.epochs * cfg.rounds,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        optimizer=cfg.optimizer,  # type: ignore[arg-type]
    )
    return float(res.accuracy)


def _write_report(
    home: Path, cfg: DemoConfig, res: DemoResult, attack_rows: list[dict[str, Any]]
) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot = home / "accuracy.png"
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    xs = [r.round for r in res.rounds]
    ax.plot(xs, [r.accuracy or 0 for r in res.rounds], marker="o", label=f"fedledger ({cfg.rule})")
    if res.centralized_accuracy is not None:
        ax.axhline(res.centralized_accuracy, color="grey", linestyle="--", label="centralised")
    ax.set_xticks(xs)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"digits, {cfg.contributors} contributors, {cfg.attackers} × {cfg.attack}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(plot)
    plt.close(fig)
    md = home / "report.md"
    lines = [
        "# fedledger demo report",
        "",
        f"{cfg.contributors} contributors ({cfg.attackers} attacking with `{cfg.attack}`), "
        f"rule `{cfg.rule}`, {cfg.rounds} rounds, Dirichlet α={cfg.alpha}.",
        "",
        "| round | submitted | accepted | rejected | accuracy | gas | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res.rounds:
        rej = ", ".join(f"{k}: {v}" for k, v in sorted(r.rejected.items())) or "-"
        acc = f"{r.accuracy:.3f}" if r.accuracy is not None else "-"
        lines.append(
            f"| {r.round} | {r.submitted} | {r.accepted} | {rej} | {acc} | {r.gas:,} | {r.seconds:.1f} |"
        )
    lines += [
        "",
        f"Final accuracy: {_pct(res.final_accuracy)}; centrally trained on the same data: "
        f"{_pct(res.centralized_accuracy)}.",
        "",
        "## The attackers' updates",
        "",
        "| update | round | contributor | verdict | reason |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {a['update_id']} | {a['round']} | {a['contributor']} | {a['status']} | {a['reason']} |"
        for a in attack_rows
    ]
    lines += [
        "",
        f"Verification from chain and store alone: {'clean' if res.verify_ok else 'FAILED'}.",
    ]
    lines += [f"- {p}" for p in res.verify_problems]
    lines += ["", "![accuracy per round](accuracy.png)", ""]
    md.write_text("\n".join(lines))
    return md, plot


def _print_summary(
    con: Console, cfg: DemoConfig, res: DemoResult, attack_rows: list[dict[str, Any]]
) -> None:
    t = Table(title="rounds")
    for c in ("round", "submitted", "accepted", "rejected (by reason)", "accuracy", "gas"):
        t.add_column(c)
    for r in res.rounds:
        t.add_row(
            str(r.round),
            str(r.submitted),
            str(r.accepted),
            ", ".join(f"{k} {v}" for k, v in sorted(r.rejected.items())) or "-",
            f"{r.accuracy:.3f}" if r.accuracy is not None else "-",
            f"{r.gas:,}",
        )
    con.print(t)
    if attack_rows:
        a = Table(title="the attackers' updates")
        for c in ("update", "round", "contributor", "verdict"):
            a.add_column(c, no_wrap=True)
        a.add_column("reason", overflow="fold", ratio=1)  # wrapped, never cut
        for row in attack_rows:
            a.add_row(
                str(row["update_id"]),
                str(row["round"]),
                row["contributor"][:10] + "…",
                row["status"],
                row["reason"] or "",
            )
        con.print(a)
    fa = f"{res.final_accuracy:.3f}" if res.final_accuracy is not None else "-"
    ca = f"{res.centralized_accuracy:.3f}" if res.centralized_accuracy is not None else "-"
    con.print(f"final accuracy {fa} (centrally trained on the same data: {ca})")
    con.print(
        "verify: "
        + (
            "[green]clean[/] — chain, store and recomputation agree"
            if res.verify_ok
            else "[red]FAILED[/]: " + "; ".join(res.verify_problems[:3])
        )
    )
