"""The ``fedledger`` command line (typer + rich).

Every command is a thin shell over the SDK functions the backend and the tests use.  Failures
print one line (``error: …``) and exit non-zero; read commands take ``--json``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedledger import __version__
from fedledger.config import Settings, load_settings
from fedledger.errors import ConfigError, FedledgerError, KeystoreError, VerificationError

app = typer.Typer(
    name="fedledger",
    help="Blockchain-verified ledger for federated training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
task_app = typer.Typer(
    help="Create tasks and admit contributors and validators.", no_args_is_help=True
)
keys_app = typer.Typer(help="Encrypted keystores.", no_args_is_help=True)
app.add_typer(task_app, name="task")
app.add_typer(keys_app, name="keys")

out = Console()
err = Console(stderr=True)


def _show_version(value: bool) -> None:
    if value:
        out.print(f"fedledger {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Blockchain-verified ledger for federated training."""


# -- common options ---------------------------------------------------------------------------

RpcOpt = Annotated[
    str | None, typer.Option("--rpc-url", help="Ethereum RPC URL [FEDLEDGER_RPC_URL]")
]
IpfsOpt = Annotated[
    str | None, typer.Option("--ipfs", help="'embedded' or a Kubo RPC URL [FEDLEDGER_IPFS]")
]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="data dir [FEDLEDGER_HOME]")]
KeystoreOpt = Annotated[
    Path | None, typer.Option("--keystore", help="keystore dir [FEDLEDGER_KEYSTORE]")
]
ContractOpt = Annotated[
    str | None, typer.Option("--contract", help="TrainingLedger address [FEDLEDGER_CONTRACT]")
]
DbOpt = Annotated[str | None, typer.Option("--db", help="database URL [FEDLEDGER_DB]")]
KeyOpt = Annotated[str, typer.Option("--key", "-k", help="keystore name or address to sign with")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
AllowModelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-model",
        help="let this node import this module:factory when a task names it (repeatable; "
        "adds to FEDLEDGER_ALLOW_MODELS); tasks naming any other code are refused",
    ),
]


def _settings(**kw: Any) -> Settings:
    return load_settings(**kw)


def _allowed(settings: Settings, flags: list[str] | None) -> tuple[str, ...]:
    """The factories this node may import: FEDLEDGER_ALLOW_MODELS plus every --allow-model."""
    from fedledger.learning.architecture import allow_list

    return tuple(sorted(allow_list([*settings.allowed_models, *(flags or [])])))


def _password(settings: Settings, name: str, *, confirm: bool = False) -> str:
    if settings.password:
        return settings.password
    if not sys.stdin.isatty():
        raise KeystoreError(
            f"no password for key {name!r}", hint="set FEDLEDGER_PASSWORD or run in a terminal"
        )
    return str(typer.prompt(f"password for {name}", hide_input=True, confirmation_prompt=confirm))


def _account(settings: Settings, key: str):  # type: ignore[no-untyped-def]
    from fedledger.chain.keys import find_key, load_key

    info = find_key(settings.keystore_dir, key)
    return load_key(settings.keystore_dir, key, _password(settings, info.name))


def _ledger(settings: Settings, key: str | None = None):  # type: ignore[no-untyped-def]
    from fedledger.chain.ledger import open_ledger

    account = _account(settings, key) if key else None
    led = open_ledger(
        settings.resolve_rpc_url(), settings.contract, settings.deployments_dir, account
    )
    led.log_chunk = settings.log_chunk
    return led


def _store(settings: Settings):  # type: ignore[no-untyped-def]
    from fedledger.content.store import open_store

    return open_store(settings.ipfs, settings.home)


def _emit(data: Any, as_json: bool, table: Table | None = None) -> None:
    if as_json or table is None:
        out.print_json(json.dumps(data, default=str))
    else:
        out.print(table)


# -- devnet / deploy --------------------------------------------------------------------------


@app.command()
def devnet(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8545,
    hardhat: Annotated[
        bool, typer.Option("--hardhat", help="run `npx hardhat node` instead of anvil")
    ] = False,
    accounts: Annotated[int, typer.Option(help="number of development accounts")] = 10,
    home: HomeOpt = None,
) -> None:
    """Start a local development chain and print its accounts (public test keys: devnets only)."""
    from fedledger.chain.devnet import dev_private_keys, start_anvil, start_hardhat

    s = _settings(home=home)
    dn = start_hardhat(port) if hardhat else start_anvil(port, accounts=accounts)
    s.home.mkdir(parents=True, exist_ok=True)
    s.devnet_file().write_text(
        json.dumps({"url": dn.url, "chain_id": dn.chain_id, "kind": dn.kind})
    )
    from eth_account import Account

    t = Table(title=f"{dn.kind} devnet at {dn.url} (chain {dn.chain_id})")
    t.add_column("#")
    t.add_column("address")
    for i, k in enumerate(dev_private_keys(accounts)):
        t.add_row(str(i), Account.from_key(k).address)
    out.print(t)
    out.print("import an account into your keystore with `fedledger keys new NAME --dev-index I`")
    out.print("Ctrl-C stops the devnet.")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        dn.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        dn.stop()
        s.devnet_file().unlink(missing_ok=True)


@app.command()
def deploy(
    key: KeyOpt,
    rpc_url: RpcOpt = None,
    home: HomeOpt = None,
    keystore: KeystoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy TrainingLedger and record it in <home>/deployments/<chain_id>.json."""
    from fedledger.chain.ledger import Ledger, connect

    s = _settings(rpc_url=rpc_url, home=home, keystore=keystore)
    acct = _account(s, key)
    w3 = connect(s.resolve_rpc_url())
    led = Ledger.deploy(w3, acct, s.deployments_dir)
    info = {
        "address": led.address,
        "chain_id": led.chain_id,
        "block": led.from_block,
        "record": str(s.deployments_dir / f"{led.chain_id}.json"),
    }
    if as_json:
        _emit(info, True)
    else:
        out.print(
            f"TrainingLedger deployed at [bold]{led.address}[/] on chain {led.chain_id} "
            f"(block {led.from_block}); recorded in {info['record']}"
        )


# -- keys -------------------------------------------------------------------------------------


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Argument(help="a name for the key")],
    dev_index: Annotated[
        int | None, typer.Option(help="import devnet account #I instead of a fresh key")
    ] = None,
    home: HomeOpt = None,
    keystore: KeystoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key (or import a devnet account) into an encrypted keystore."""
    from fedledger.chain.keys import DEV_SCRYPT_N, USER_SCRYPT_N, new_key

    s = _settings(home=home, keystore=keystore)
    pk = None
    if dev_index is not None:
        from fedledger.chain.devnet import dev_private_keys

        if not 0 <= dev_index < 100:
            raise ConfigError("--dev-index must be between 0 and 99")
        pk = dev_private_keys(dev_index + 1)[dev_index]
    # A devnet key is public already: a costly KDF would only slow every command that uses it.
    cost = USER_SCRYPT_N if pk is None else DEV_SCRYPT_N
    info = new_key(
        s.keystore_dir, name, _password(s, name, confirm=True), private_key=pk, scrypt_n=cost
    )
    if as_json:
        _emit({"name": info.name, "address": info.address, "path": str(info.path)}, True)
    else:
        out.print(f"key [bold]{info.name}[/] {info.address} → {info.path}")


@keys_app.command("list")
def keys_list(home: HomeOpt = None, keystore: KeystoreOpt = None, as_json: JsonOpt = False) -> None:
    """List keystores (names and addresses; never secrets)."""
    from fedledger.chain.keys import list_keys

    s = _settings(home=home, keystore=keystore)
    rows = [
        {"name": k.name, "address": k.address, "path": str(k.path)}
        for k in list_keys(s.keystore_dir)
    ]
    t = Table(title=f"keys in {s.keystore_dir}")
    for c in ("name", "address"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["name"], r["address"])
    _emit(rows, as_json, t)


# -- tasks ------------------------------------------------------------------------------------


@task_app.command("create")
def task_create(
    key: KeyOpt,
    max_samples: Annotated[
        int,
        typer.Option(
            min=1,
            max=2**64 - 1,
            help="largest numSamples one update may claim (its fedavg weight): about your "
            "largest contributor's data set; the chain refuses more",
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            help='built-in model, a JSON description ({"kind": "mlp", ...}) or '
            "module:factory (with --allow-model)"
        ),
    ] = "mlp_digits",
    dataset: Annotated[str, typer.Option(help="data set contributors train on")] = "digits",
    rule: Annotated[
        str, typer.Option(help="fedavg | median | trimmed_mean | krum | multi_krum")
    ] = "fedavg",
    rule_params: Annotated[str, typer.Option(help="JSON object of rule parameters")] = "{}",
    screening: Annotated[str, typer.Option(help="JSON object of screening parameters")] = "{}",
    epochs: int = 1,
    lr: float = 0.05,
    batch_size: int = 32,
    min_updates: int = 1,
    max_updates: int = 100,
    quorum: int = 1,
    round_duration: Annotated[int, typer.Option(help="seconds; 0 = none")] = 0,
    open_: Annotated[bool, typer.Option("--open", help="anyone may contribute")] = False,
    seed: int = 0,
    rpc_url: RpcOpt = None,
    ipfs: IpfsOpt = None,
    home: HomeOpt = None,
    keystore: KeystoreOpt = None,
    contract: ContractOpt = None,
    allow_model: AllowModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a training task: publish the initial model and spec, then createTask."""
    from fedledger.flows.task import create_task
    from fedledger.learning.architecture import admit
    from fedledger.learning.models import build_task_model, state_to_numpy
    from fedledger.protocol.taskspec import TaskSpec, TrainingParams

    s = _settings(rpc_url=rpc_url, ipfs=ipfs, home=home, keystore=keystore, contract=contract)
    try:
        agg = {"rule": rule, **json.loads(rule_params)}
        scr = json.loads(screening)
    except ValueError as exc:
        raise ConfigError(f"--rule-params / --screening must be JSON objects: {exc}") from exc
    from fedledger.protocol.aggregation import RuleSpec

    RuleSpec.parse(agg)
    allowed = _allowed(s, allow_model)
    described: str | dict[str, Any] = model
    if model.lstrip().startswith("{"):
        try:
            described = json.loads(model)
        except ValueError as exc:
            raise ConfigError(f"--model is not a JSON description: {exc}") from exc
    # ModelNotAllowed unless allowed; the pin is the description's or the factory source's hash.
    admitted = admit(described, {}, pinned=None, allow=allowed, require_pin=False)
    spec = TaskSpec(
        model=described,
        model_sha256=admitted.sha256,
        dataset=dataset,
        aggregation=agg,
        screening=scr,
        seed=seed,
        training=TrainingParams(epochs=epochs, lr=lr, batch_size=batch_size),
    )
    initial = state_to_numpy(build_task_model(spec, allow=allowed))  # before any transaction
    led = _ledger(s, key)
    tid = create_task(
        led,
        _store(s),
        spec,
        initial,
        max_samples=max_samples,
        min_updates=min_updates,
        max_updates=max_updates,
        quorum=quorum,
        round_duration=round_duration,
        open_=open_,
    )
    if as_json:
        _emit({"task_id": tid}, True)
    else:
        out.print(
            f"task [bold]{tid}[/] created ({admitted.label} on {dataset}, rule {rule}, "
            f"quorum {quorum})"
        )


AddressesArg = Annotated[list[str], typer.Argument(help="one or more addresses (0x…)")]


@task_app.command("add-contributor")
def task_add_contributor(
    task_id: int,
    addresses: AddressesArg,
    key: KeyOpt,
    rpc_url: RpcOpt = None,
    home: HomeOpt = None,
    keystore: KeystoreOpt = None,
    contract: ContractOpt = None,
) -> None:
    """Admit contributors to a task (task owner only)."""
    from fedledger.chain.ledger import to_checksum

    who = [to_checksum(a) for a in addresses]  # all valid before anything is sent
    s = _settings(rpc_url=rpc_url, home=home, keystore=keystore, contract=contract)
    led = _ledger(s, key)
    for a in who:
        led.add_contributor(task_id, a)
        out.print(f"{a} may now contribute to task {task_id}")


@task_app.command("add-validator")
def task_add_validator(
    task_id: int,
    addresses: AddressesArg,
    key: KeyOpt,
    rpc_url: RpcOpt = None,
    home: HomeOpt = None,
    keystore: KeystoreOpt = None,
    contract: ContractOpt = None,
) -> None:
    """Admit validators to a task (task owner only)."""
    from fedledger.chain.ledger import to_checksum

    who = [to_checksum(a) for a in addresses]
    s = _settings(rpc_url=rpc_url, home=home, keystore=keystore, contract=contract)
    led = _ledger(s, key)
    for a in who:
        led.add_validator(task_id, a)
        out.print(f"{a} now validates task {task_id}")


# -- contributing -----------------------------------------------------------------------------


@app.command()
def submit(
    task_id: Annotated[int, typer.Option("--task", help="task id")],
    file: Annotated[Path, typer.Argument(help="update file (safetensors)")],
    samples: Annotated[int, typer.Option(help="number of training samples behind the update")],
    key: KeyOpt,
    sign_only: Annotated[
        Path | None,
        typer.Option(
            "--sign-only",
            help="write an EIP-712 signed update here for a relayer instead of sending",
        ),
    ] = None,
    valid_for: Annotated[int, typer.Option(help="seconds a signed update stays valid")] = 3600,
    rpc_url: RpcOpt = None,
    ipfs: IpfsOpt = None,
    home: HomeOpt = None,
    keystore: KeystoreOpt = None,
    contract: ContractOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store an update file and record it on chain (or sign it for a relayer)."""
    from fedledger.errors import NotFoundError
    from fedledger.flows import submit as sdk
    from fedledger.flows.task import load_task

    s = _settings(rpc_url=rpc_url, ipfs=ipfs, home=home, keystore=keystore, contract=contract)
    if not file.is_file():
        raise NotFoundError(f"update file {file} does not exist")
    data = file.read_bytes()
    led = _ledger(s, key)
    store = _store(s)
    state = load_task(led, store, task_id)
    if sign_only is not None:
        assert led.sender is not None
        su = sdk.sign(led, led.sender.account, store, state, data, samples, valid_for_s=valid_for)
        sign_only.write_text(json.dumps(su.to_json(), indent=2))
        _emit(su.to_json(), as_json) if as_json else out.print(
            f"signed update written to {sign_only}"
        )
        return
    res = sdk.submit(led, store, state, data, samples)
    info = {
        "update_id": res.update_id,
        "task_id": task_id,
        "round": res.round,
        "content_hash": res.content_hash,
        "cid": res.cid,
    }
    if as_json:
        _emit(info, True)
    else:
        out.print(
            f"update [bold]{res.update_id}[/] recorded for task {task_id} round {res.round}: {res.cid}"
        )


@app.command()
def relay(
    files: Annotated[list[Path], typer.Argument(help="signed update JSON files")],
    key: KeyOpt,
    batch: Annotated[int, typer.Option(help="updates per transaction")] = 64,
    rpc_url: RpcOpt = None,
    home: HomeOpt = None,
    keystore: KeystoreOpt = None,
    contract: ContractOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit signed updates for their contributors, in batches (the relayer pays the gas)."""
    from fedledger.chain.ledger import SignedUpdate
    from fedledger.errors import ChainError, NotFoundError
    from fedledger.flows.relay import BatchRelayer

    signed = []
    for f in files:  # every file readable before anything is sent
        if not f.is_file():
            raise NotFoundError(f"signed update {f} does not exist")
        try:
            signed.append(SignedUpdate.from_bytes(f.read_bytes()))  # a contributor's: bounded
        except OSError as exc:
            raise ConfigError(f"cannot read signed update {f}: {exc}") from exc
        except ConfigError as exc:
            raise ConfigError(
                f"cannot read signed update {f}: {exc.message}", hint=exc.hint
            ) from exc
    s = _settings(rpc_url=rpc_url, home=home, keystore=keystore, contract=contract)
    if not 1 <= batch <= 256:
        raise ConfigError("--batch must be between 1 and 256")
    # One entry landed by someone else never sinks the rest: see fedledger.flows.relay.BatchRelayer.
    done = BatchRelayer(_ledger(s, key), batch_size=batch).send_all(signed)
    ids = [st.update_id for st in done if st.update_id is not None]
    _emit({"update_ids": ids}, True) if as_json else out.print(f"relayed updates {ids}")
    failed = [st for st in done if st.state != "submitted"]
    if failed:
        raise ChainError(
            f"{len(failed)} of {len(done)} signed updates were not submitted: "
            + "; ".join(f"{st.contributor} task {st.task_id}: {st.reason}" for st in failed)
        )


@app.command()
def train(
    task_id: Annotated[int, typer.Option("--task", help="task id")],
    key: KeyOpt,
    data: Annotated[
        Path | None, typer.Option(help=".npz with arrays X and y (your local data)")
    ] = None,
    partition: Annotated[
        str | None,
        typer.Option(help="simulate: use share I/N of the task's built-in data set, e.g. 0/5"),
    ] = None,
    alpha: Annotated[float, typer.Option(help="Dirichlet alpha for --partition (0 = IID)")] = 0.5,
    encoding: Annotated[str, typer.Option(help="fp32 | fp16 | int8 | topk")] = "fp32",
    dp_clip: Annotated[
        float | None, typer.Option(help="enable DP: clip the update to this L2 norm")
    ] = None,
    dp_noise: Annotated[float, typer.Option(help="DP noise multiplier")] = 1.0,
    dp_delta: Annotated[float, typer.Option(help="DP delta")] = 1e-5,
    relay_out: Annotated[
        Path | None, typer.Option("--sign-only", help="sign for a relayer, write JSON here")
    ] = None,
    seed: int = 0,
    rpc_url: RpcOpt = None,
    ipfs: IpfsOpt = None,
    home: HomeOpt = None,
    keystore: KeystoreOpt = None,
    contract: ContractOpt = None,
    allow_model: AllowModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train on local data against the current global model and submit the update."""
    from rich.progress import Progress

    from fedledger.flows.contribute import ContributorOptions, contribute, contribute_signed
    from fedledger.flows.local_data import load_local_data
    from fedledger.flows.task import load_task
    from fedledger.learning.architecture import admit_spec
    from fedledger.learning.privacy import DPConfig, PrivacyAccountant

    s = _settings(rpc_url=rpc_url, ipfs=ipfs, home=home, keystore=keystore, contract=contract)
    if encoding not in ("fp32", "fp16", "int8", "topk"):
        raise ConfigError(f"unknown encoding {encoding!r}", hint="use fp32, fp16, int8 or topk")
    led = _ledger(s, key)
    store = _store(s)
    state = load_task(led, store, task_id)
    allowed = _allowed(s, allow_model)
    admit_spec(state.spec, allowed)  # ModelNotAllowed / ModelPinMismatch before anything runs
    local = load_local_data(state.spec.dataset, data, partition, alpha, seed=state.spec.seed)
    dp = DPConfig(dp_clip, dp_noise, dp_delta) if dp_clip is not None else None
    acct = PrivacyAccountant(s.home / "privacy" / f"{led.sender.address}.json") if dp else None  # type: ignore[union-attr]
    with Progress(console=err, transient=True) as prog:
        bar = prog.add_task(f"training task {task_id} round {state.current_round}", total=None)

        def cb(p: Any) -> None:
            prog.update(bar, completed=p.step, total=p.total_steps)

        opts = ContributorOptions(
            encoding=encoding,  # type: ignore[arg-type]
            dp=dp,
            accountant=acct,
            seed=seed,
            progress=cb,
            allow_models=allowed,
        )
        if relay_out is not None:
            su = contribute_signed(led, led.sender.account, store, task_id, local, opts)  # type: ignore[union-attr]
            relay_out.write_text(json.dumps(su.to_json(), indent=2))
            _emit(su.to_json(), as_json) if as_json else out.print(
                f"signed update written to {relay_out}"
            )
            return
        res = contribute(led, store, task_id, local, opts)
    info = {
        "update_id": res.update_id,
        "task_id": task_id,
        "round": res.round,
        "content_hash": res.content_hash,
        "cid": res.cid,
        "num_samples": res.num_samples,
    }
    if as_json:
        _emit(info, True)
    else:
        out.print(
            f"trained on {res.num_samples} samples; update [bold]{res.update_id}[/] "
            f"recorded for task {task_id} round {res.round}"
        )


# -- reading ----------------------------------------------------------------------------------


@app.command()
def history(
    task_id: Annotated[int | None, typer.Option("--task")] = None,
    round_: Annotated[int | None, typer.Option("--round")] = None,
    contributor: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(help="rows (at most 500)")] = 50,
    api: Annotated[
        str | None, typer.Option(help="backend REST URL; without it, read the chain")
    ] = None,
    rpc_url: RpcOpt = None,
    home: HomeOpt = None,
    contract: ContractOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Who contributed what, and what became of it (from the REST API, else from the chain)."""
    if not 1 <= limit <= 500:
        raise ConfigError(f"--limit must be between 1 and 500, got {limit}")
    from fedledger.chain.ledger import to_checksum
    from fedledger.flows.history import history_from_api, history_from_chain

    if contributor is not None:
        contributor = to_checksum(contributor)
    s = _settings(rpc_url=rpc_url, home=home, contract=contract)
    if api:
        rows = history_from_api(
            api, task_id=task_id, round_=round_, contributor=contributor, status=status, limit=limit
        )
    else:
        rows = history_from_chain(
            _ledger(s),
            _store(s),
            task_id=task_id,
            round_=round_,
            contributor=contributor,
            status=status,
            limit=limit,
        )
    t = Table(title="contributions")
    cols = ("update_id", "task_id", "round", "contributor", "num_samples", "status", "reason")
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(r.get(c, "")) if r.get(c) is not None else "" for c in cols])
    _emit(rows, as_json, t)


@app.command()
def verify(
    task_id: Annotated[int, typer.Option("--task")],
    round_: Annotated[
        int | None, typer.Option("--round", help="one round (default: all final rounds)")
    ] = None,
    rpc_url: RpcOpt = None,
    ipfs: IpfsOpt = None,
    home: HomeOpt = None,
    contract: ContractOpt = None,
    allow_model: AllowModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-verify from the chain and the store alone: hashes, verdicts, aggregates, roots."""
    from rich.progress import Progress

    from fedledger.flows.verify import verify_task

    s = _settings(rpc_url=rpc_url, ipfs=ipfs, home=home, contract=contract)
    with Progress(console=err, transient=True) as prog:
        bar = prog.add_task("verifying", total=None)
        report = verify_task(
            _ledger(s),
            _store(s),
            task_id,
            round_,
            progress=lambda done, total: prog.update(bar, completed=done, total=total),
            allow_models=_allowed(s, allow_model),
        )
    if as_json:
        _emit(report.to_json(), True)
    else:
        t = Table(title=f"verification of task {task_id}")
        for c in ("round", "updates", "accepted", "aggregate", "verdict root", "problems"):
            t.add_column(c)
        for r in report.rounds:
            t.add_row(
                str(r.round),
                str(r.updates),
                str(r.accepted),
                "ok" if r.aggregate_ok else "MISMATCH",
                "ok" if r.root_ok else "MISMATCH",
                "; ".join(r.problems) or "-",
            )
        out.print(t)
        out.print(f"model: {report.model}", markup=False, highlight=False)
    if not report.ok:
        raise VerificationError(
            f"verification found {len(report.problems)} problem(s); the first: {report.problems[0]}"
        )
    if not as_json:
        out.print(
            f"[green]verified[/] {len(report.rounds)} round(s) of task {task_id}: chain, store and recomputation agree"
        )


# -- service and demo -------------------------------------------------------------------------


def _service_entry_point() -> Any:
    """The validator service's ``run_service``, found through the ``fedledger.service`` entry
    point: the service imports the SDK, never the other way round."""
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="fedledger.service") if ep.name == "serve"]
    if not found:
        raise ConfigError(
            "the validator service (fedledger_backend) is not installed",
            hint="install the fedledger distribution, which ships it: pip install -e .",
        )
    return found[0].load()


@app.command()
def serve(
    key: Annotated[
        str | None, typer.Option("--key", "-k", help="validator key (omit to only index and serve)")
    ] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    rpc_url: RpcOpt = None,
    ipfs: IpfsOpt = None,
    db: DbOpt = None,
    home: HomeOpt = None,
    keystore: KeystoreOpt = None,
    contract: ContractOpt = None,
    confirmations: Annotated[
        int | None, typer.Option(help="blocks to wait before indexing")
    ] = None,
    eval_dataset: Annotated[
        bool, typer.Option(help="evaluate each new global model on the task's held-out split")
    ] = True,
    reindex: Annotated[
        bool,
        typer.Option(
            help="drop the index and rebuild it from the chain (e.g. after a devnet restart)"
        ),
    ] = False,
    relay_key: Annotated[
        str | None,
        typer.Option(
            help="also serve POST /relay/updates, paying gas with this key (gasless "
            "contributors) for the admitted contributors of the tasks --key validates"
        ),
    ] = None,
    relay_task: Annotated[
        list[int] | None,
        typer.Option(
            "--relay-task",
            min=1,
            help="relay for this task too (repeatable; adds to FEDLEDGER_RELAY_TASKS)",
        ),
    ] = None,
    relay_open_budget: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="updates per round of a served open task relayed for contributors it never "
            "admitted [FEDLEDGER_RELAY_OPEN_BUDGET, 0: none]",
        ),
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="CIDR of a reverse proxy whose X-Forwarded-For names the client (repeatable; "
            "adds to FEDLEDGER_TRUSTED_PROXIES); from other peers the header is ignored",
        ),
    ] = None,
    worker_process: Annotated[
        bool,
        typer.Option(
            help="run the indexer and validator in their own supervised process (the API then "
            "never waits on their GIL); --no-worker-process runs them as a thread"
        ),
    ] = True,
    allow_model: AllowModelOpt = None,
) -> None:
    """Run the backend: indexer, validator (with --key) and the REST API with its dashboard."""
    run_service = _service_entry_point()
    s = _settings(
        rpc_url=rpc_url,
        ipfs=ipfs,
        db=db,
        home=home,
        keystore=keystore,
        contract=contract,
        confirmations=confirmations,
    )
    s = s.with_overrides(allow_models=",".join(_allowed(s, allow_model)))
    s = s.with_overrides(
        relay_tasks=",".join([*map(str, s.relay_task_ids), *map(str, relay_task or [])]),
        relay_open_budget=relay_open_budget,
        trusted_proxies=",".join([*s.trusted_proxy_list, *(trusted_proxy or [])]),
    )
    account = _account(s, key) if key else None
    relay_account = _account(s, relay_key) if relay_key else None
    run_service(
        s,
        account=account,
        host=host,
        port=port,
        evaluate=eval_dataset,
        reindex=reindex,
        relay_account=relay_account,
        worker_process=worker_process,
    )


@app.command()
def demo(
    contributors: Annotated[int | None, typer.Option(help="number of contributors [6]")] = None,
    attackers: Annotated[int | None, typer.Option(help="how many of them attack [2]")] = None,
    attack: Annotated[
        str | None,
        typer.Option(help="sign_flip | scaling | gaussian_noise | label_flip | ... [sign_flip]"),
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="training rounds [5]")] = None,
    rule: Annotated[str | None, typer.Option(help="aggregation rule [multi_krum]")] = None,
    alpha: Annotated[
        float | None, typer.Option(help="Dirichlet alpha of the data split [0.5]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="REST API / dashboard port [8000, or a free one]")
    ] = None,
    home: HomeOpt = None,
    keep_serving: Annotated[
        bool, typer.Option(help="keep the dashboard up after the run until Ctrl-C")
    ] = False,
) -> None:
    """The whole mission on embedded defaults: devnet, contract, task, contributors, validators.

    Everything lives in <home>/demo, which is emptied at the start of every run.
    """
    from fedledger.cli.demo import DemoConfig, run_demo

    s = _settings(home=home)
    given = {
        "contributors": contributors,
        "attackers": attackers,
        "attack": attack,
        "rounds": rounds,
        "rule": rule,
        "alpha": alpha,
        "port": port,
    }
    cfg = DemoConfig(
        home=s.home / "demo",
        keep_serving=keep_serving,
        **{k: v for k, v in given.items() if v is not None},  # type: ignore[arg-type]
    )
    result = run_demo(cfg, console=out)
    if not result.ok:
        raise typer.Exit(1)


def _die(message: str, code: int) -> None:
    """Print ``error: message`` as one line on stderr (never wrapped, never marked up) and exit."""
    line = " ".join(message.split())
    print(f"error: {line}", file=sys.stderr)
    sys.exit(code)


def _usage_error(exc: typer.TyperException) -> None:
    ctx: Any = getattr(exc, "ctx", None)
    message = exc.format_message()
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help was the answer
        if message.strip():
            print(message, file=sys.stderr)
        sys.exit(exc.exit_code)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    _die(f"{message}{where}", exc.exit_code)


def main() -> None:
    """Console entry point: one-line errors and meaningful exit codes, never a traceback.

    Usage errors exit 2, each FedledgerError its own ``exit_code``; a transport failure that
    escaped the SDK is reported as a ChainError.  FEDLEDGER_DEBUG=1 shows the traceback of an
    unexpected exception instead.
    """
    try:
        rc = app(standalone_mode=False)
    except FedledgerError as exc:
        _die(str(exc), exc.exit_code)
    except typer.TyperException as exc:  # click's usage errors: unknown option, bad value, …
        _usage_error(exc)
    except typer.Abort:
        _die("aborted", 130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        from fedledger.chain.ledger import as_chain_error

        chain = as_chain_error(exc)
        if chain is not None:
            _die(str(chain), chain.exit_code)
        if os.environ.get("FEDLEDGER_DEBUG"):
            raise
        _die(
            f"unexpected {type(exc).__name__}: {exc} "
            "(rerun with FEDLEDGER_DEBUG=1 for the traceback, and please report it)",
            1,
        )
    # Without standalone mode click returns typer.Exit's code instead of exiting.
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
