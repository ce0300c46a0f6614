"""The ``fedledger`` command line (typer + rich).

Every command is a thin shell over the SDK functions the backend and the tests use.  Failures
print one line (``error: …``) and exit non-zero; read commands take ``--json``.

The options many commands share (``--rpc-url``, ``--ipfs``, ``--home``, ``--keystore``,
``--contract``, ``--db``) are declared once (:data:`_COMMON_OPTIONS`); a command names the ones
it takes with :func:`common` and receives them as one :class:`Common`.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Annotated, Any

import click
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
model_app = typer.Typer(help="Global models of a task.", no_args_is_help=True)
store_app = typer.Typer(
    help="Move content between stores as CAR files (ipfs dag export / import).",
    no_args_is_help=True,
)
app.add_typer(task_app, name="task")
app.add_typer(keys_app, name="keys")
app.add_typer(model_app, name="model")
app.add_typer(store_app, name="store")

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


_COMMON_OPTIONS: dict[str, Any] = {
    "rpc_url": RpcOpt,
    "ipfs": IpfsOpt,
    "home": HomeOpt,
    "keystore": KeystoreOpt,
    "contract": ContractOpt,
    "db": DbOpt,
}


@dataclass(frozen=True)
class Common:
    """The shared options as given on a command line (``None``: not given, the environment or
    the default decides); :meth:`settings` merges them over ``FEDLEDGER_*``."""

    rpc_url: str | None = None
    ipfs: str | None = None
    home: Path | None = None
    keystore: Path | None = None
    contract: str | None = None
    db: str | None = None

    def settings(self, **extra: Any) -> Settings:
        return load_settings(**asdict(self), **extra)


Command = Callable[..., None]


def common(*names: str) -> Callable[[Command], Command]:
    """Give a command the shared options ``names`` (each with its one flag and help text,
    after the command's own) and hand them to it as one :class:`Common` in its ``opts``."""
    unknown = set(names) - set(_COMMON_OPTIONS)
    assert not unknown, f"no common option {unknown}"

    def decorate(fn: Command) -> Command:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for name, p in sig.parameters.items() if name != "opts"]
        shared = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=a)
            for n, a in _COMMON_OPTIONS.items()
            if n in names
        ]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> None:
            given = {n: kwargs.pop(n) for n in names}
            fn(opts=Common(**given), **kwargs)

        params = [*own, *shared]
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}  # typer reads these
        return command

    return decorate


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
        _print_table(table)


def _print_table(table: Table) -> None:
    """A table on stdout: fitted to a terminal; piped or redirected, at the width its cells
    need, so that no value is cut short (``fedledger task list | grep digits`` finds it)."""
    if out.is_terminal:
        out.print(table)
        return
    from rich.measure import Measurement

    wide = out.options.update(max_width=1 << 16)
    width = max(Measurement.get(out, wide, table).maximum, 1)
    Console(file=out.file, width=width, no_color=out.no_color).print(table)


# -- devnet / deploy --------------------------------------------------------------------------


@app.command()
@common("home")
def devnet(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8545,
    hardhat: Annotated[
        bool, typer.Option("--hardhat", help="run `npx hardhat node` instead of anvil")
    ] = False,
    accounts: Annotated[int, typer.Option(help="number of development accounts")] = 10,
    *,
    opts: Common,
) -> None:
    """Start a local development chain and print its accounts (public test keys: devnets only)."""
    from fedledger.chain.devnet import dev_private_keys, start_anvil, start_hardhat

    s = opts.settings()
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
@common("rpc_url", "home", "keystore")
def deploy(key: KeyOpt, as_json: JsonOpt = False, *, opts: Common) -> None:
    """Deploy TrainingLedger and record it in <home>/deployments/<chain_id>.json."""
    from fedledger.chain.ledger import Ledger, connect

    s = opts.settings()
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
@common("home", "keystore")
def keys_new(
    name: Annotated[str, typer.Argument(help="a name for the key")],
    dev_index: Annotated[
        int | None, typer.Option(help="import devnet account #I instead of a fresh key")
    ] = None,
    as_json: JsonOpt = False,
    *,
    opts: Common,
) -> None:
    """Create a key (or import a devnet account) into an encrypted keystore."""
    from fedledger.chain.keys import DEV_SCRYPT_N, USER_SCRYPT_N, new_key

    s = opts.settings()
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
@common("home", "keystore")
def keys_list(as_json: JsonOpt = False, *, opts: Common) -> None:
    """List keystores (names and addresses; never secrets)."""
    from fedledger.chain.keys import list_keys

    s = opts.settings()
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


@keys_app.command("committee-new")
@common("home", "keystore")
def keys_committee_new(
    name: Annotated[str, typer.Argument(help="a name for the committee key")],
    as_json: JsonOpt = False,
    *,
    opts: Common,
) -> None:
    """Create an X25519 committee key (encrypted keystore): a validator's or an auditor's key
    for reading private tasks' updates (`fedledger serve --committee-key NAME` registers it)."""
    from fedledger.protocol.committee_keys import new_committee_key

    s = opts.settings()
    info = new_committee_key(s.keystore_dir, name, _password(s, name, confirm=True))
    _emit({"name": info.name, "public_key": info.public_hex, "path": str(info.path)}, as_json)


@keys_app.command("committee-list")
@common("home", "keystore")
def keys_committee_list(as_json: JsonOpt = False, *, opts: Common) -> None:
    """List committee keys (names and public keys; never secrets)."""
    from fedledger.protocol.committee_keys import list_committee_keys

    s = opts.settings()
    rows = [
        {"name": k.name, "public_key": k.public_hex, "path": str(k.path)}
        for k in list_committee_keys(s.keystore_dir)
    ]
    t = Table(title=f"committee keys in {s.keystore_dir}")
    for c in ("name", "public_key"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["name"], r["public_key"])
    _emit(rows, as_json, t)


def _committee_key(settings: Settings, name: str):  # type: ignore[no-untyped-def]
    from fedledger.protocol.committee_keys import find_committee_key, load_committee_key

    info = find_committee_key(settings.keystore_dir, name)
    return load_committee_key(settings.keystore_dir, name, _password(settings, info.name))


# -- tasks ------------------------------------------------------------------------------------


@task_app.command("create")
@common("rpc_url", "ipfs", "home", "keystore", "contract")
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
    frac_bits: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=31,
            help="exact fixed-point aggregation: deltas are int32 in units of 2^-FRAC_BITS "
            "(e.g. 24; docs/aggregation.md); unset = the float32 rules",
        ),
    ] = None,
    epochs: int = 1,
    lr: float = 0.05,
    batch_size: int = 32,
    min_updates: int = 1,
    max_updates: int = 100,
    quorum: int = 1,
    round_duration: Annotated[int, typer.Option(help="seconds; 0 = none")] = 0,
    attest_window: Annotated[
        int,
        typer.Option(
            min=1,
            max=2**32 - 1,
            help="seconds an attestation attempt lasts: validators that did not reach the "
            "quorum in it may attest again",
        ),
    ] = 600,
    open_: Annotated[bool, typer.Option("--open", help="anyone may contribute")] = False,
    seed: int = 0,
    allow_model: AllowModelOpt = None,
    as_json: JsonOpt = False,
    *,
    opts: Common,
) -> None:
    """Create a training task: check it, publish the initial model and spec, then createTask.

    The task is refused before anything is sent when no one could train it: an unknown data
    set, a rule or screening parameter that does not parse, a model that does not take the
    data set's samples or has fewer outputs than it has classes."""
    from fedledger.flows.task import check_spec, create_task
    from fedledger.learning.architecture import admit
    from fedledger.learning.models import build_task_model, state_to_numpy
    from fedledger.protocol.taskspec import TaskSpec, TrainingParams

    s = opts.settings()
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
        fixed_point=None if frac_bits is None else {"frac_bits": frac_bits},
    )
    net = build_task_model(spec, allow=allowed)
    check_spec(spec, net)  # before the key is unlocked or anything is sent
    initial = state_to_numpy(net)
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
        attest_window=attest_window,
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
@common("rpc_url", "home", "keystore", "contract")
def task_add_contributor(
    task_id: int, addresses: AddressesArg, key: KeyOpt, *, opts: Common
) -> None:
    """Admit contributors to a task (task owner only)."""
    from fedledger.chain.ledger import to_checksum

    who = [to_checksum(a) for a in addresses]  # all valid before anything is sent
    s = opts.settings()
    led = _ledger(s, key)
    for a in who:
        led.add_contributor(task_id, a)
        out.print(f"{a} may now contribute to task {task_id}")


@task_app.command("add-validator")
@common("rpc_url", "home", "keystore", "contract")
def task_add_validator(task_id: int, addresses: AddressesArg, key: KeyOpt, *, opts: Common) -> None:
    """Admit validators to a task (task owner only)."""
    from fedledger.chain.ledger import to_checksum

    who = [to_checksum(a) for a in addresses]
    s = opts.settings()
    led = _ledger(s, key)
    for a in who:
        led.add_validator(task_id, a)
        out.print(f"{a} now validates task {task_id}")


def _summary_rows(tasks: list[Any]) -> Table:
    t = Table(title="tasks")
    for c in ("task", "model", "dataset", "rule", "round", "updates", "sealed", "quorum",
              "max samples", "open"):  # fmt: skip
        t.add_column(c)
    for k in tasks:
        c = k.config
        t.add_row(
            str(k.task_id),
            k.model or f"? ({k.spec_error})",
            k.dataset or "?",
            k.rule or "?",
            str(k.current_round),
            f"{k.updates_in_round}/{c.max_updates} (closes at {c.min_updates})",
            "yes" if k.sealed else "no",
            str(c.quorum),
            str(c.max_samples),
            "yes" if c.open else "no",
        )
    return t


@task_app.command("list")
@common("rpc_url", "ipfs", "home", "contract")
def task_list(
    limit: Annotated[int, typer.Option(min=1, help="newest tasks shown")] = 50,
    as_json: JsonOpt = False,
    *,
    opts: Common,
) -> None:
    """Tasks on the contract, newest first: model, data set, rule, round and its updates."""
    from fedledger.flows.task import list_tasks

    s = opts.settings()
    tasks = list(list_tasks(_ledger(s), _store(s), limit=limit))
    if as_json:
        _emit([k.to_json() for k in tasks], True)
    elif not tasks:
        out.print("no tasks yet: create one with `fedledger task create`")
    else:
        _print_table(_summary_rows(tasks))


@task_app.command("show")
@common("rpc_url", "ipfs", "home", "contract")
def task_show(
    task_id: Annotated[int, typer.Argument(help="task id")],
    as_json: JsonOpt = False,
    *,
    opts: Common,
) -> None:
    """One task as the chain holds it now: config, spec summary, current round."""
    from fedledger.flows.task import task_summary

    s = opts.settings()
    k = task_summary(_ledger(s), _store(s), task_id)
    if as_json:
        _emit(k.to_json(), True)
        return
    t = Table(title=f"task {task_id}", show_header=False)
    t.add_column("field")
    t.add_column("value")
    for name, value in k.to_json().items():
        if value is not None:
            t.add_row(name, str(value))
    _print_table(t)


# -- contributing -----------------------------------------------------------------------------


@app.command()
@common("rpc_url", "ipfs", "home", "keystore", "contract")
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
    as_json: JsonOpt = False,
    *,
    opts: Common,
) -> None:
    """Store an update file and record it on chain (or sign it for a relayer).

    The file is checked first, as validators will judge it (an update of this task's current
    round and model, by this key's address, its tensors the model's, all finite), and the
    round must still take it: a refused update costs no gas and no slot."""
    from fedledger.errors import ContractRevert
    from fedledger.flows import submit as sdk
    from fedledger.flows.contribute import check_round_open
    from fedledger.flows.task import explain_revert, load_task

    s = opts.settings()
    data = _read_update_file(file)  # before any key is unlocked
    led = _ledger(s, key)
    assert led.sender is not None
    store = _store(s)
    state = load_task(led, store, task_id)
    check_round_open(led, state, led.sender.address)
    try:
        if sign_only is not None:
            su = sdk.sign(
                led, led.sender.account, store, state, data, samples, valid_for_s=valid_for
            )
            sign_only.write_text(json.dumps(su.to_json(), indent=2))
            _emit(su.to_json(), as_json) if as_json else out.print(
                f"signed update written to {sign_only}"
            )
            return
        res = sdk.submit(led, store, state, data, samples)
    except ContractRevert as exc:
        raise explain_revert(exc) from None
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


_UPDATE_FILE_HINT = (
    "an update file is the .safetensors file of one round's update (the SDK's "
    "codec.encode_update writes it); to train and submit in one step run `fedledger train "
    "--task ID --data FILE.npz`"
)

# Leading bytes of files people mistake for an update file, and what each is.
_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a zip archive (a torch.save checkpoint or an .npz data file?)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x80\x02", "a Python pickle (a torch.save checkpoint?)"),
    (b"\x80\x04", "a Python pickle (a torch.save checkpoint?)"),
    (b"\x80\x05", "a Python pickle (a torch.save checkpoint?)"),
)


def _not_safetensors(data: bytes) -> tuple[str, str] | None:
    """Why ``data`` is plainly no safetensors file, and what to do (``None``: it may be one;
    the codec then judges it).  A safetensors file opens with its JSON header's length (8
    bytes, little-endian), then the header, ``{``: bytes that do may be one whatever else
    they look like (a 640-byte header starts as a pickle does)."""
    header = int.from_bytes(data[:8], "little")
    if len(data) >= 10 and header <= len(data) - 8 and data[8:9] == b"{":
        return None
    for magic, what in _OTHER_FORMATS:
        if data.startswith(magic):
            return f"it is {what}", _UPDATE_FILE_HINT
    if data[:64].lstrip()[:1] == b"{":
        return (
            "it is a JSON file, not safetensors",
            "a signed update (`--sign-only` writes them) is sent with `fedledger relay FILE`; "
            + _UPDATE_FILE_HINT,
        )
    return (
        f"its first bytes are not a safetensors header (it is {len(data)} bytes, "
        "of no known format)",
        _UPDATE_FILE_HINT,
    )


def _read_update_file(file: Path) -> bytes:
    """The bytes of an update file given to ``submit``, refused unless it is a safetensors
    update file (an image, a checkpoint, a signed update or any other file is named as such)."""
    from fedledger.errors import FormatError, NotFoundError
    from fedledger.protocol import codec

    if not file.is_file():
        raise NotFoundError(f"update file {file} does not exist")
    size = file.stat().st_size
    if size > codec.DEFAULT_MAX_BYTES:
        raise FormatError(
            f"{file} is {size} bytes: not an update file (at most {codec.DEFAULT_MAX_BYTES})",
            hint=_UPDATE_FILE_HINT,
        )
    data = file.read_bytes()
    plainly = _not_safetensors(data)
    if plainly is not None:
        why, hint = plainly
        raise FormatError(f"{file} is not an update file: {why}", hint=hint)
    try:
        codec.decode(data, kind="update", copy=False)
    except FormatError as exc:
        raise FormatError(
            f"{file} is not an update file: {exc.message}", hint=_UPDATE_FILE_HINT
        ) from exc
    return data


@app.command()
@common("rpc_url", "home", "keystore", "contract")
def relay(
    files: Annotated[list[Path], typer.Argument(help="signed update JSON files")],
    key: KeyOpt,
    batch: Annotated[int, typer.Option(help="updates per transaction")] = 64,
    as_json: JsonOpt = False,
    *,
    opts: Common,
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
    s = opts.settings()
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
@common("rpc_url", "ipfs", "home", "keystore", "contract")
def train(
    task_id: Annotated[int, typer.Option("--task", help="task id")],
    key: KeyOpt,
    data: Annotated[
        Path | None,
        typer.Option(
            help="your local data: an .npz with arrays X (n samples x features, numbers) and "
            "y (n class ids 0..C-1), read without pickle"
        ),
    ] = None,
    partition: Annotated[
        str | None,
        typer.Option(help="simulate: use share I/N of the task's built-in data set, e.g. 0/5"),
    ] = None,
    alpha: Annotated[float, typer.Option(help="Dirichlet alpha for --partition (0 = IID)")] = 0.5,
    rounds: Annotated[
        int,
        typer.Option(
            min=1,
            help="train this many rounds: the current one, then each next one as soon as the "
            "validators open it (with --json: one JSON object per line per round when above 1)",
        ),
    ] = 1,
    round_timeout: Annotated[
        float,
        typer.Option(
            min=1,
            help="seconds to wait for each next round before giving up (validators down?)",
        ),
    ] = 600.0,
    device: Annotated[
        str,
        typer.Option(
            help="where to train: cpu, cuda, cuda:N or mps (the update file is the same "
            "whatever the device)"
        ),
    ] = "cpu",
    encoding: Annotated[
        str,
        typer.Option(
            help="auto | fp32 | fp16 | int8 | topk | int32 (auto: int32 for a task with a "
            "fixed-point format, else fp32)"
        ),
    ] = "auto",
    dp_clip: Annotated[
        float | None, typer.Option(help="enable DP: clip the update to this L2 norm")
    ] = None,
    dp_noise: Annotated[float, typer.Option(help="DP noise multiplier")] = 1.0,
    dp_delta: Annotated[float, typer.Option(help="DP delta")] = 1e-5,
    dp_budget: Annotated[
        float | None,
        typer.Option(
            help="the most cumulative DP epsilon to spend on this task: a round that would "
            "exceed it (or the task's own budget) is refused before anything is sent"
        ),
    ] = None,
    relay_out: Annotated[
        Path | None, typer.Option("--sign-only", help="sign for a relayer, write JSON here")
    ] = None,
    seed: int = 0,
    allow_model: AllowModelOpt = None,
    as_json: JsonOpt = False,
    *,
    opts: Common,
) -> None:
    """Train on local data against the global model and submit the update (--rounds N: N rounds).

    With --rounds N it trains the current round, then waits for each next round and trains
    it.  Each round prints the trained model's loss and accuracy on your own data."""
    from rich.progress import Progress

    from fedledger.flows.contribute import (
        ContributorOptions,
        contribute_rounds,
        contribute_signed,
    )
    from fedledger.flows.local_data import load_local_data
    from fedledger.flows.task import load_task
    from fedledger.learning.architecture import admit_spec
    from fedledger.learning.privacy import DPConfig, PrivacyAccountant
    from fedledger.learning.train import resolve_device

    s = opts.settings()
    if encoding not in ("auto", "fp32", "fp16", "int8", "topk", "int32"):
        raise ConfigError(
            f"unknown encoding {encoding!r}", hint="use auto, fp32, fp16, int8, topk or int32"
        )
    if relay_out is not None and rounds > 1:
        raise ConfigError(
            "--sign-only writes one signed update: it does not combine with --rounds",
            hint="sign each round with its own `fedledger train --sign-only FILE`",
        )
    resolve_device(device)  # a device this machine lacks: said before any key is unlocked
    led = _ledger(s, key)
    assert led.sender is not None
    store = _store(s)
    state = load_task(led, store, task_id)
    allowed = _allowed(s, allow_model)
    admit_spec(state.spec, allowed)  # ModelNotAllowed / ModelPinMismatch before anything runs
    local = load_local_data(state.spec.dataset, data, partition, alpha, seed=state.spec.seed)
    dp = DPConfig(dp_clip, dp_noise, dp_delta) if dp_clip is not None else None
    private = dp is not None or state.spec.privacy_policy().dp is not None
    acct = PrivacyAccountant(s.home / "privacy" / f"{led.sender.address}.json") if private else None
    with Progress(console=err, transient=True) as prog:
        bar = prog.add_task(f"training task {task_id} round {state.current_round}", total=None)

        def cb(p: Any) -> None:
            prog.update(bar, completed=p.step, total=p.total_steps)

        def training(rnd: int) -> None:
            prog.update(bar, description=f"training task {task_id} round {rnd}", completed=0)

        def waiting(now: int, wanted: int) -> None:
            prog.update(
                bar,
                description=f"task {task_id}: waiting for round {wanted} "
                f"(validators are closing round {now})",
                completed=0,
                total=None,
            )

        copts = ContributorOptions(
            encoding=None if encoding == "auto" else encoding,  # type: ignore[arg-type]
            dp=dp,
            accountant=acct,
            dp_budget=dp_budget,
            seed=seed,
            progress=cb,
            allow_models=allowed,
            device=device,
        )
        if relay_out is not None:
            su = contribute_signed(
                led, led.sender.account, store, task_id, local, copts, state=state
            )
            relay_out.write_text(json.dumps(su.to_json(), indent=2))
            _emit(su.to_json(), as_json) if as_json else out.print(
                f"signed update written to {relay_out}"
            )
            return
        for res in contribute_rounds(
            led,
            store,
            task_id,
            local,
            copts,
            rounds,
            timeout_s=round_timeout,
            on_wait=waiting,
            on_train=training,
            state=state,
        ):
            _print_round(res, task_id, as_json=as_json, lines=rounds > 1)


def _print_round(res: Any, task_id: int, *, as_json: bool, lines: bool) -> None:
    """One trained and recorded round: a sentence, a JSON object, or one JSON line."""
    info = {
        "update_id": res.update_id,
        "task_id": task_id,
        "round": res.round,
        "content_hash": res.content_hash,
        "cid": res.cid,
        "num_samples": res.num_samples,
        "train_loss": res.loss,
        "local_loss": res.local_loss,
        "local_accuracy": res.local_accuracy,
    }
    if as_json:
        if lines:
            print(json.dumps(info), flush=True)
        else:
            _emit(info, True)
        return
    quality = f"training loss {res.loss:.4f}"
    if res.local_accuracy is not None and res.local_loss is not None:
        quality = f"local loss {res.local_loss:.4f}, accuracy {res.local_accuracy:.1%} on your data"
    out.print(
        f"trained on {res.num_samples} samples ({quality}); update [bold]{res.update_id}[/] "
        f"recorded for task {task_id} round {res.round}",
        highlight=False,
        soft_wrap=True,
    )


@model_app.command("pull")
@common("rpc_url", "ipfs", "home", "contract")
def model_pull(
    task_id: Annotated[int, typer.Option("--task", help="task id")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="write the model file here")],
    round_: Annotated[
        int | None,
        typer.Option(
            "--round",
            min=0,
            help="the model round R trains from: the initial model for 0, else the aggregate "
            "attested for round R-1 [the current round]",
        ),
    ] = None,
    as_json: JsonOpt = False,
    *,
    opts: Common,
) -> None:
    """Write a task's global model (a safetensors file), checked against the hash on chain."""
    from fedledger.flows.task import model_for_round

    s = opts.settings()
    got = model_for_round(_ledger(s), _store(s), task_id, round_)
    with _atomic_write(out_file) as f:
        f.write(got.data)
    info = {
        "task_id": got.task_id,
        "round": got.round,
        "content_hash": got.content_hash,
        "cid": got.cid,
        "bytes": len(got.data),
        "path": str(out_file),
    }
    if as_json:
        _emit(info, True)
    else:
        out.print(
            f"global model of task {task_id} for round {got.round} ({len(got.data)} bytes, "
            f"sha256 {got.content_hash} as on chain) written to {out_file}",
            highlight=False,
            soft_wrap=True,
        )


@contextmanager
def _atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """A file written whole or not at all: a temp file beside ``path``, renamed over it."""
    from fedledger.errors import FedledgerError

    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"cannot write {path}: directory {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except (FedledgerError, KeyboardInterrupt):
        Path(tmp).unlink(missing_ok=True)
        raise


# -- optimistic verification (a task's court: bonds, watching, rewards) ---------------------

rewards_app = typer.Typer(help="Rewards of a court task's settled rounds.", no_args_is_help=True)
bond_app = typer.Typer(help="A validator's bond in a court task.", no_args_is_help=True)
app.add_typer(rewards_app, name="rewards")
app.add_typer(bond_app, name="bond")


def _court(ledger: Any, task_id: int):  # type: ignore[no-untyped-def]
    """The court the task's owner set on the ledger, signing with the ledger's key."""
    from fedledger.chain.court import Court

    address = ledger.court_of(task_id)
    if address is None:
        raise ConfigError(
            f"task {task_id} has no court: its rounds are final on quorum",
            hint="the task's owner hands it to a court with TrainingLedger.setCourt",
        )
    return Court(ledger.w3, address, ledger.sender)


@app.command()
@common("rpc_url", "ipfs", "home", "keystore", "contract")
def watch(
    task_id: Annotated[int, typer.Option("--task", help="task id")],
    key: KeyOpt,
    once: Annotated[bool, typer.Option(help="check the attested rounds once and exit")] = False,
    poll: Annotated[float, typer.Option(help="seconds between checks")] = 5.0,
    *,
    opts: Common,
) -> None:
    """Re-verify every attested round of a court task; prove a wrong aggregate on chain."""
    from fedledger.flows import watch as watch_flow

    s = opts.settings()
    led = _ledger(s, key)
    court = _court(led, task_id)
    store = _store(s)

    def show(f: Any) -> None:
        err.print(f"round {f.round}: {f.status} {f.detail}".rstrip())

    if once:
        findings = watch_flow.watch_once(led, court, store, task_id)
        _emit([f.to_json() for f in findings], True)
        return
    watch_flow.watch(led, court, store, task_id, poll_s=poll, report=show)


@rewards_app.command("claim")
@common("rpc_url", "ipfs", "home", "keystore", "contract")
def rewards_claim(
    task_id: Annotated[int, typer.Option("--task", help="task id")],
    round_: Annotated[int, typer.Option("--round", help="a settled (or settleable) round")],
    key: KeyOpt,
    contributor: Annotated[
        str | None, typer.Option(help="whose rewards (default: the key's address)")
    ] = None,
    *,
    opts: Common,
) -> None:
    """Claim the rewards an address earned in a round (settling it first when it may)."""
    from fedledger.flows import rewards

    s = opts.settings()
    led = _ledger(s, key)
    who = contributor or led.sender.address
    claims = rewards.claim(led, _court(led, task_id), _store(s), task_id, round_, who)
    _emit([c.to_json() for c in claims], True)


@bond_app.command("post")
@common("rpc_url", "home", "keystore", "contract")
def bond_post(
    task_id: Annotated[int, typer.Option("--task", help="task id")], key: KeyOpt, *, opts: Common
) -> None:
    """Post the task's bond as one of its validators (needed before attesting)."""
    led = _ledger(opts.settings(), key)
    receipt = _court(led, task_id).bond(task_id)
    _emit({"task": task_id, "tx": receipt["transactionHash"].hex()}, True)


@bond_app.command("unbond")
@common("rpc_url", "home", "keystore", "contract")
def bond_unbond(
    task_id: Annotated[int, typer.Option("--task", help="task id")], key: KeyOpt, *, opts: Common
) -> None:
    """Stop attesting; the bond is withdrawable after the task's unbonding delay."""
    led = _ledger(opts.settings(), key)
    receipt = _court(led, task_id).unbond(task_id)
    _emit({"task": task_id, "tx": receipt["transactionHash"].hex()}, True)


@bond_app.command("withdraw")
@common("rpc_url", "home", "keystore", "contract")
def bond_withdraw(
    task_id: Annotated[int, typer.Option("--task", help="task id")], key: KeyOpt, *, opts: Common
) -> None:
    """Take the bond back once the unbonding delay passed and no challenge is open."""
    led = _ledger(opts.settings(), key)
    receipt = _court(led, task_id).withdraw(task_id)
    _emit({"task": task_id, "tx": receipt["transactionHash"].hex()}, True)


# -- reading ----------------------------------------------------------------------------------


@app.command()
@common("rpc_url", "home", "contract")
def history(
    task_id: Annotated[int | None, typer.Option("--task")] = None,
    round_: Annotated[int | None, typer.Option("--round")] = None,
    contributor: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(help="rows (at most 500)")] = 50,
    api: Annotated[
        str | None, typer.Option(help="backend REST URL; without it, read the chain")
    ] = None,
    as_json: JsonOpt = False,
    *,
    opts: Common,
) -> None:
    """Who contributed what, and what became of it (from the REST API, else from the chain)."""
    if not 1 <= limit <= 500:
        raise ConfigError(f"--limit must be between 1 and 500, got {limit}")
    from fedledger.chain.ledger import to_checksum
    from fedledger.flows.history import history_from_api, history_from_chain

    if contributor is not None:
        contributor = to_checksum(contributor)
    s = opts.settings()
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
@common("rpc_url", "ipfs", "home", "contract")
def verify(
    task_id: Annotated[int, typer.Option("--task")],
    round_: Annotated[
        int | None, typer.Option("--round", help="one round (default: all final rounds)")
    ] = None,
    allow_model: AllowModelOpt = None,
    committee_key: Annotated[
        str | None,
        typer.Option(
            help="committee key (an auditor's or a validator's) to read a private task's "
            "updates with"
        ),
    ] = None,
    as_json: JsonOpt = False,
    *,
    opts: Common,
) -> None:
    """Re-verify from the chain and the store alone: hashes, verdicts, aggregates, roots."""
    from rich.progress import Progress

    from fedledger.flows.verify import verify_task

    s = opts.settings()
    with Progress(console=err, transient=True) as prog:
        bar = prog.add_task("verifying", total=None)
        report = verify_task(
            _ledger(s),
            _store(s),
            task_id,
            round_,
            progress=lambda done, total: prog.update(bar, completed=done, total=total),
            allow_models=_allowed(s, allow_model),
            committee_key=_committee_key(s, committee_key) if committee_key else None,
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


# -- content ----------------------------------------------------------------------------------

MAX_CAR_BYTES = 8 * 1024**3  # four of the largest model files validators read
MAX_CAR_ROOTS = 1024


def _blockstore(s: Settings) -> Any:
    from fedledger.content.blockstore import Blockstore

    store = _store(s)
    if not isinstance(store, Blockstore):
        raise ConfigError(
            "store export and import work on the embedded store; FEDLEDGER_IPFS names a Kubo node",
            hint="on a Kubo node use `ipfs dag export CID > file.car` and `ipfs dag import "
            "file.car`, or unset FEDLEDGER_IPFS / --ipfs for the embedded store",
        )
    return store


@store_app.command("export")
@common("ipfs", "home")
def store_export(
    cid: Annotated[str, typer.Argument(help="root CID of the content (a model, an update, …)")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="write the CAR file here")],
    as_json: JsonOpt = False,
    *,
    opts: Common,
) -> None:
    """Write the DAG under CID as a CAR v1 file (as `ipfs dag export` does)."""
    from fedledger.content.car import iter_car
    from fedledger.content.cid import parse_cid
    from fedledger.errors import ContentNotFoundError

    store = _blockstore(opts.settings())
    root = str(parse_cid(cid))  # FormatError for a string that is not a CID
    if not store.has(root):
        raise ContentNotFoundError(
            f"{root} is not in the store at {store.root}",
            hint="check the CID (`fedledger history`, `fedledger task show`) and --home",
        )
    size = 0
    with _atomic_write(out_file) as f:
        for piece in iter_car(store, root):  # every block verified as it is read
            f.write(piece)
            size += len(piece)
    if as_json:
        _emit({"cid": root, "bytes": size, "path": str(out_file)}, True)
    else:
        out.print(
            f"CAR of {root} ({size} bytes) written to {out_file}", highlight=False, soft_wrap=True
        )


@store_app.command("import")
@common("ipfs", "home")
def store_import(
    file: Annotated[Path, typer.Argument(help="a CAR v1 file (`ipfs dag export` writes them)")],
    max_bytes: Annotated[
        int, typer.Option(min=1, help="refuse a CAR file larger than this")
    ] = MAX_CAR_BYTES,
    as_json: JsonOpt = False,
    *,
    opts: Common,
) -> None:
    """Add a CAR file's blocks to the store and pin its roots (as `ipfs dag import` does).

    The file is read twice: once to check every block against its CID and the file's bounds,
    then to store them; a corrupt, truncated or oversize CAR adds nothing.  Each root's DAG
    must then be whole in the store."""
    from fedledger.content.car import import_car, read_car
    from fedledger.errors import ContentNotFoundError, FormatError, NotFoundError

    store = _blockstore(opts.settings())
    if not file.is_file():
        raise NotFoundError(f"CAR file {file} does not exist")
    size = file.stat().st_size
    if size > max_bytes:
        raise FormatError(
            f"CAR file {file} is {size} bytes, more than --max-bytes {max_bytes}",
            hint="raise --max-bytes if you trust the file and have the disk for it",
        )
    with file.open("rb") as f:
        try:
            roots, sections = read_car(f)
            blocks = sum(1 for _ in sections)  # each one verified, nothing stored yet
        except FormatError as exc:
            raise FormatError(
                f"{file} is not a valid CAR v1 file: {exc.message}",
                hint="export it again (`fedledger store export` or `ipfs dag export`)",
            ) from exc
        if not roots:
            raise FormatError(
                f"CAR file {file} names no root: nothing would keep its blocks",
                hint="export a DAG by its root CID (`fedledger store export CID`)",
            )
        if len(roots) > MAX_CAR_ROOTS:
            raise FormatError(
                f"CAR file {file} names {len(roots)} roots, more than {MAX_CAR_ROOTS}"
            )
        if f.tell() > max_bytes:  # the file grew while it was read
            raise FormatError(f"CAR file {file} grew past --max-bytes {max_bytes} while read")
        f.seek(0)
        try:
            result = import_car(store, f)
        except ContentNotFoundError as exc:
            raise FormatError(
                f"CAR file {file} does not hold the whole DAG of its roots: {exc.message}",
                hint="export the DAG whole (`fedledger store export ROOT`); its blocks stay "
                "unpinned and go at the next gc",
            ) from exc
    info = {"roots": list(result.roots), "blocks": result.blocks, "checked_blocks": blocks}
    if as_json:
        _emit(info, True)
    else:
        out.print(
            f"imported {result.blocks} blocks from {file}; pinned {', '.join(result.roots)}",
            highlight=False,
            soft_wrap=True,
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


MAX_TASKS_SCANNED = 10_000


def _say_what_the_key_validates(s: Settings, key: str, address: str) -> None:
    """At start: a log line and a line on stderr when the validator key validates no task
    (the service would index and serve, and never judge a round)."""
    import logging

    from fedledger.logs import configure

    led = _ledger(s)
    count = led.task_count()
    if count > MAX_TASKS_SCANNED:
        return  # too many to ask one by one at start; the worker reports what it judges
    validated = next((t for t in range(1, count + 1) if led.is_validator(t, address)), None)
    if validated is not None:
        return
    configure("INFO", json_lines=True)  # as the service logs (it configures the same again)
    where = f"none of the {count} task(s) on contract {led.address}" if count else "no task yet"
    logging.getLogger("fedledger.service").warning(
        "the validator key validates no task",
        extra={"validator": address, "tasks": count, "contract": led.address},
    )
    err.print(
        f"warning: key {key} ({address}) validates {where}: this node indexes and serves, "
        f"and judges no round until a task owner admits it (`fedledger task add-validator "
        f"ID {address}`)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@common("rpc_url", "ipfs", "db", "home", "keystore", "contract")
def serve(
    key: Annotated[
        str | None, typer.Option("--key", "-k", help="validator key (omit to only index and serve)")
    ] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
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
    committee_key: Annotated[
        str | None,
        typer.Option(
            help="committee key (`fedledger keys committee-new`) the validator reads private "
            "tasks' updates with; registered on chain for each private task it validates"
        ),
    ] = None,
    *,
    opts: Common,
) -> None:
    """Run the backend: indexer, validator (with --key) and the REST API with its dashboard."""
    run_service = _service_entry_point()
    s = opts.settings(confirmations=confirmations)
    s = s.with_overrides(allow_models=",".join(_allowed(s, allow_model)))
    s = s.with_overrides(
        relay_tasks=",".join([*map(str, s.relay_task_ids), *map(str, relay_task or [])]),
        relay_open_budget=relay_open_budget,
        trusted_proxies=",".join([*s.trusted_proxy_list, *(trusted_proxy or [])]),
    )
    account = _account(s, key) if key else None
    relay_account = _account(s, relay_key) if relay_key else None
    reader = _committee_key(s, committee_key) if committee_key else None
    if account is not None:
        _say_what_the_key_validates(s, key or "", account.address)
    run_service(
        s,
        account=account,
        host=host,
        port=port,
        evaluate=eval_dataset,
        reindex=reindex,
        relay_account=relay_account,
        worker_process=worker_process,
        committee_key=reader,
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


# Usage errors are typer's own exceptions from typer 0.21 on (it vendors click), click's before
# (flwr[simulation] 1.42, the `flower` extra, holds typer below 0.21).
_USAGE_ERRORS: tuple[type[Exception], ...] = tuple(
    e for e in (getattr(typer, "TyperException", None), click.ClickException) if e is not None
)


def _die(message: str, code: int) -> None:
    """Print ``error: message`` as one line on stderr (never wrapped, never marked up) and exit."""
    line = " ".join(message.split())
    print(f"error: {line}", file=sys.stderr)
    sys.exit(code)


def _usage_error(exc: Any) -> None:
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
    except _USAGE_ERRORS as exc:  # click's usage errors: unknown option, bad value, …
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
