"""docker-compose.yml and the Dockerfile agree with the code they run.

No container engine runs here, so the stack is checked statically.  The file is resolved
(``${...}`` from ``deploy/stack.env.example``, YAML merge keys) by Debian's ``docker-compose
config``, which also validates it against the Compose schema; without that binary the test
falls back to PyYAML and the same interpolation rules.  Then every ``fedledger`` command line
in it is parsed by the real CLI (an unknown subcommand, flag or a missing required option
fails), every ``FEDLEDGER_*`` variable must be a :class:`fedledger.config.Settings` field and load
into one, and the services must point at each other consistently (hosts, ports, key names,
volumes, health checks, start order).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import typer
import yaml

from fedledger.cli.main import app
from fedledger.config import Settings

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / "deploy" / "stack.env.example"
STATEFUL = {  # service -> directory its state lives in
    "devnet": "/data/anvil",
    "kubo": "/data/ipfs",
    "postgres": "/var/lib/postgresql/data",
    "setup": "/data/fedledger",
    "backend": "/data/fedledger",
}
LONG_RUNNING = ("devnet", "kubo", "postgres", "backend")


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


_VAR = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR:?error}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        got = env.get(name)
        if op and op.endswith("?") and not got:
            raise ValueError(f"required variable {name} is missing: {arg}")
        if op and op.endswith("-") and not got:
            return arg
        return got or ""

    return _VAR.sub(sub, value)


def docker_compose() -> str | None:
    return shutil.which("docker-compose")


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    """The resolved compose file: docker-compose's own view when it is installed."""
    exe = docker_compose()
    if exe is not None:
        out = subprocess.run(
            [exe, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(yaml.safe_load(out))
    return dict(interpolate(yaml.safe_load(COMPOSE.read_text()), env_example()))


def services(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(stack["services"])


def argv(svc: dict[str, Any]) -> list[str]:
    def as_list(v: Any) -> list[str]:
        if v is None:
            return []
        return shlex.split(v) if isinstance(v, str) else [str(x) for x in v]

    return as_list(svc.get("entrypoint")) + as_list(svc.get("command"))


def fedledger_invocations(svc: dict[str, Any]) -> list[list[str]]:
    """Each ``fedledger`` command line a service runs: directly, or inside ``sh -c``."""
    args = argv(svc)
    if not args:
        return []
    if args[0] == "fedledger":
        return [args[1:]]
    if args[0] in ("sh", "bash") and any(a.startswith("-") and "c" in a for a in args[1:-1]):
        found = []
        for part in re.split(r"&&|\|\||;|\n", args[-1]):
            words = shlex.split(part)
            if words and words[0] == "fedledger":
                found.append(words[1:])
        return found
    return []


def parse_cli(args: list[str]) -> tuple[Any, dict[str, Any]]:
    """Parse a command line with the real ``fedledger`` CLI (typer's command tree) without
    running it: an unknown subcommand or flag, a bad value or a missing option fails."""
    cmd: Any = typer.main.get_command(app)
    path = ["fedledger"]
    rest = list(args)
    while getattr(cmd, "commands", None) is not None and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = cmd.commands.get(name)
        assert sub is not None, f"`{' '.join(path)}` has no subcommand {name!r}"
        cmd, path = sub, path + [name]
    try:
        ctx = cmd.make_context(" ".join(path), rest)
    except typer.Exit as done:  # --help and the like
        assert done.exit_code == 0
        return cmd, {}
    except Exception as exc:  # the CLI's usage errors (typer vendors its own click)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        raise AssertionError(f"`{' '.join(path + rest)}`: {message}") from exc
    return cmd, dict(ctx.params)


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def named_volumes(svc: dict[str, Any]) -> dict[str, str]:
    """Named volume -> mount point."""
    out = {}
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            out[v["source"]] = v["target"]
        else:
            source, target = v.split(":")[:2]
            out[source] = target
    return out


# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(docker_compose() is None, reason="docker-compose not installed (ensure-apt)")
def test_docker_compose_accepts_the_file() -> None:
    exe = docker_compose()
    assert exe is not None
    run = subprocess.run(
        [exe, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr


@pytest.mark.skipif(docker_compose() is None, reason="docker-compose not installed (ensure-apt)")
def test_docker_compose_refuses_to_start_without_the_passwords(tmp_path: Path) -> None:
    exe = docker_compose()
    assert exe is not None
    empty = tmp_path / "empty.env"
    empty.write_text("")
    run = subprocess.run(
        [exe, "-f", str(COMPOSE), "--env-file", str(empty), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert run.returncode != 0
    assert "POSTGRES_PASSWORD" in run.stderr or "FEDLEDGER_PASSWORD" in run.stderr


def test_the_stack_has_a_devnet_kubo_postgres_and_the_backend(stack: dict[str, Any]) -> None:
    assert {"devnet", "kubo", "postgres", "backend"} <= set(services(stack))
    assert services(stack)["kubo"]["image"].startswith("ipfs/kubo:")
    assert services(stack)["postgres"]["image"].startswith("postgres:")


def test_every_fedledger_command_line_parses_with_the_real_cli(stack: dict[str, Any]) -> None:
    seen = []
    for name, svc in services(stack).items():
        for args in fedledger_invocations(svc):
            parse_cli(args)
            seen.append((name, args[0]))
    assert ("backend", "serve") in seen
    assert ("setup", "deploy") in seen
    assert ("setup", "keys") in seen


def test_the_backend_serves_on_all_interfaces_with_the_validator_key(
    stack: dict[str, Any],
) -> None:
    svc = services(stack)
    (args,) = fedledger_invocations(svc["backend"])
    cmd, params = parse_cli(args)
    assert cmd.name == "serve"
    assert params["host"] == "0.0.0.0"
    # the key is one that setup puts into the keystore
    created = [a[2] for a in fedledger_invocations(svc["setup"]) if a[:2] == ["keys", "new"]]
    assert params["key"] in created
    # the health check and the published port use the port it listens on
    assert f"127.0.0.1:{params['port']}/health" in " ".join(svc["backend"]["healthcheck"]["test"])
    targets = [
        int(p["target"]) if isinstance(p, dict) else int(str(p).split(":")[-1].split("/")[0])
        for p in svc["backend"]["ports"]
    ]
    assert params["port"] in targets


def test_every_FEDLEDGER_variable_is_a_settings_field(stack: dict[str, Any]) -> None:
    fields = {f"FEDLEDGER_{name.upper()}" for name in Settings.model_fields}
    for name, svc in services(stack).items():
        unknown = {k for k in environment(svc) if k.startswith("FEDLEDGER_")} - fields
        assert not unknown, f"{name}: {sorted(unknown)} are not fedledger settings"


def test_the_backend_environment_loads_into_settings(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(services(stack)["backend"])
    for key in [k for k in os.environ if k.startswith("FEDLEDGER_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert s.rpc_url == env["FEDLEDGER_RPC_URL"]
    assert s.ipfs == "http://kubo:5001"
    assert s.db is not None and s.db.startswith("postgresql://")
    assert str(s.home) == env["FEDLEDGER_HOME"]
    assert str(s.keystore_dir) == env["FEDLEDGER_KEYSTORE"]
    assert s.password and s.confirmations >= 0


def test_services_point_at_each_other(stack: dict[str, Any]) -> None:
    svc = services(stack)
    env = environment(svc["backend"])
    anvil = argv(svc["devnet"])
    rpc = urlparse(env["FEDLEDGER_RPC_URL"])
    assert rpc.hostname == "devnet"
    assert str(rpc.port) == anvil[anvil.index("--port") + 1]
    assert anvil[anvil.index("--host") + 1] == "0.0.0.0"
    # setup records the deployment under the devnet's chain id
    chain_id = anvil[anvil.index("--chain-id") + 1]
    assert f"deployments/{chain_id}.json" in argv(svc["setup"])[-1]
    assert urlparse(env["FEDLEDGER_IPFS"]).hostname == "kubo"
    assert urlparse(env["FEDLEDGER_IPFS"]).port == 5001
    db = urlparse(env["FEDLEDGER_DB"])
    pg = environment(svc["postgres"])
    assert db.hostname == "postgres"
    assert (db.username, db.password, db.path) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        "/" + pg["POSTGRES_DB"],
    )


def test_every_stateful_part_keeps_its_state_in_a_named_volume(stack: dict[str, Any]) -> None:
    declared = set(stack.get("volumes") or {})
    svc = services(stack)
    for name, path in STATEFUL.items():
        mounts = named_volumes(svc[name])
        assert path in mounts.values(), f"{name}: no volume at {path}"
        assert set(mounts) <= declared
    anvil = argv(svc["devnet"])
    assert anvil[anvil.index("--state") + 1].startswith(STATEFUL["devnet"] + "/")
    assert environment(svc["backend"])["FEDLEDGER_HOME"] == STATEFUL["backend"]


def test_long_running_services_have_health_checks_and_start_in_order(
    stack: dict[str, Any],
) -> None:
    svc = services(stack)
    for name in LONG_RUNNING:
        assert svc[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name, s in svc.items():
        deps = s.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on without conditions"
        for dep, cond in deps.items():
            want = (
                "service_completed_successfully"
                if "healthcheck" not in svc[dep]
                else "service_healthy"
            )
            assert cond["condition"] == want, f"{name} -> {dep}"
    assert set(svc["backend"]["depends_on"]) == {"devnet", "kubo", "postgres", "setup"}


def test_every_variable_the_file_uses_is_in_the_example_env() -> None:
    used = {m.group(1) or m.group(4) for m in _VAR.finditer(COMPOSE.read_text())} - {None}
    assert used <= set(env_example())


def test_the_dockerfile_installs_like_the_makefile() -> None:
    docker = (REPO / "Dockerfile").read_text()
    make = (REPO / "Makefile").read_text()
    torch = re.search(r"^TORCH_VERSION := (\S+)$", make, re.MULTILINE)
    assert torch is not None
    assert f"ARG TORCH_VERSION={torch.group(1)}" in docker
    steps = [line for line in docker.splitlines() if line.startswith("RUN ")]
    order = [
        next(i for i, s in enumerate(steps) if needle in s)
        for needle in (
            "pip install torch==${TORCH_VERSION} --index-url https://download.pytorch.org/whl/cpu",
            "npm ci",
            "pip install -e '.[postgres]'",
        )
    ]
    assert order[0] < order[2], "torch must be installed before the package"
    assert "npm ci --no-audit --no-fund" in make


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--listen", "0.0.0.0"],  # no such flag
        ["deploy"],  # --key is required
        ["serve", "--port", "http"],  # not an int
        ["keys", "create", "validator"],  # no such subcommand
    ],
)
def test_the_cli_check_catches_a_wrong_command_line(args: list[str]) -> None:
    with pytest.raises(AssertionError):
        parse_cli(args)
