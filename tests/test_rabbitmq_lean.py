"""The lean home a private RabbitMQ node boots from: only the applications it loads on its code path.

On a made-up installation (what is kept, what makes it give up), then on the session's real node: its Erlang VM's
ERL_LIBS is the lean plugins directory, and the node serves AMQP (every RabbitMQ test of the suite runs on it).
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from ttg.brokers.rabbitmq import lean
from ttg.brokers.rabbitmq.server import PrivateRabbitMQ


def _app(plugins: Path, name: str, version: str, deps: str = "kernel, stdlib") -> None:
    ebin = plugins / f"{name}-{version}" / "ebin"
    ebin.mkdir(parents=True)
    (ebin / f"{name}.app").write_text(f'{{application, {name}, [{{description, "x"}},\n  {{applications, [{deps}]}},\n  {{included_applications, []}}]}}.\n')


@pytest.fixture
def install(tmp_path: Path) -> Path:
    """A 3.10-style installation: sbin/ beside plugins/ and escript/, scripts linked from a bin/ elsewhere."""
    home = tmp_path / "lib" / "rabbitmq_server-3.10.8"
    (home / "sbin").mkdir(parents=True)
    for script in ("rabbitmq-server", "rabbitmq-env", "rabbitmq-defaults"):
        (home / "sbin" / script).write_text("#!/bin/sh\n")
    (home / "escript").mkdir()
    plugins = home / "plugins"
    _app(plugins, "rabbit", "3.10.8", "kernel, stdlib, rabbit_common, ra, 'rabbitmq_prelaunch'")
    _app(plugins, "rabbit_common", "3.10.8", "kernel, % a comment, then a dependency on the next line\n  credentials_obfuscation")
    _app(plugins, "rabbitmq_prelaunch", "3.10.8")
    _app(plugins, "ra", "2.2.0", "aten, gen_batch_server")
    for name in ("credentials_obfuscation", "aten", "gen_batch_server", "rabbitmq_mqtt", "rabbitmq_shovel", "cowboy"):
        _app(plugins, name, "1.0.0")
    _app(plugins, "rabbitmq_management", "3.10.8", "rabbit, cowboy")
    (plugins / "README").write_text("not an application")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "rabbitmq-server").symlink_to(home / "sbin" / "rabbitmq-server")
    return tmp_path / "bin" / "rabbitmq-server"


def test_the_lean_home_holds_what_the_node_and_its_enabled_plugins_need_and_nothing_else(install: Path, tmp_path: Path) -> None:
    scripts = lean.make_home(str(install), tmp_path / "node" / "home", ["rabbitmq_management"])
    assert scripts == tmp_path / "node" / "home" / "sbin"
    kept = sorted(p.name for p in (scripts.parent / "plugins").iterdir())
    assert kept == [
        "aten-1.0.0", "cowboy-1.0.0", "credentials_obfuscation-1.0.0", "gen_batch_server-1.0.0", "ra-2.2.0",
        "rabbit-3.10.8", "rabbit_common-3.10.8", "rabbitmq_management-3.10.8", "rabbitmq_prelaunch-3.10.8",
    ]  # fmt: skip
    assert sorted(p.name for p in scripts.iterdir()) == ["rabbitmq-defaults", "rabbitmq-env", "rabbitmq-server"]
    assert (scripts.parent / "escript").resolve() == (install.resolve().parent.parent / "escript")
    without = lean.make_home(str(install), tmp_path / "node" / "home", [])  # made anew: the management plugin's deps go
    assert without is not None and "cowboy-1.0.0" not in os.listdir(without.parent / "plugins")


def test_an_installation_it_cannot_read_runs_as_it_is(install: Path, tmp_path: Path) -> None:
    plugins = install.resolve().parent.parent / "plugins"
    assert lean.make_home(str(install), tmp_path / "a", ["rabbitmq_no_such_plugin"]) is None, "an enabled plugin not there"
    assert lean.make_home("/usr/bin/false", tmp_path / "b", []) is None, "not sbin/ beside plugins/"
    _app(plugins, "ra", "2.3.0")  # two versions of one application: which one Erlang loads is not guessed
    assert lean.make_home(str(install), tmp_path / "c", []) is None
    for version in ("2.3.0", "2.2.0"):
        for f in (plugins / f"ra-{version}" / "ebin").iterdir():
            f.unlink()
    (plugins / "ra-2.2.0.ez").write_bytes(b"PK")  # a dependency as an archive: nothing here reads those
    assert lean.make_home(str(install), tmp_path / "d", []) is None, "ra is in neither the plugins nor OTP as read"
    assert not any((tmp_path / d).exists() for d in "abcd"), "nothing is made for a node that runs from its installation"


def test_the_session_node_boots_with_only_the_lean_plugins_on_its_code_path(rabbitmq_server: PrivateRabbitMQ) -> None:
    assert rabbitmq_server.pid is not None
    # The start script execs the Erlang VM, so the node's process is the VM, with the ERL_LIBS the script exported.
    environ = psutil.Process(rabbitmq_server.pid).environ()
    home = rabbitmq_server.data_dir / "home"
    assert environ.get("ERL_LIBS", "").split(":")[0] == str(home / "plugins"), environ.get("ERL_LIBS")
    kept = os.listdir(home / "plugins")
    assert any(p.startswith("rabbit-") for p in kept) and not any(p.startswith("rabbitmq_mqtt-") for p in kept), kept
