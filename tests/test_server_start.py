"""A private broker that cannot start says so, as a ServerStartError naming what happened, and leaves nothing behind."""

from __future__ import annotations

import pytest

from ttg.brokers.rabbitmq.server import PrivateRabbitMQ
from ttg.brokers.redis.server import PrivateRedis
from ttg.errors import ServerStartError


@pytest.mark.parametrize("cls", [PrivateRabbitMQ, PrivateRedis])
def test_a_broker_binary_that_is_missing_is_named_with_how_to_install_it(cls: type[PrivateRabbitMQ] | type[PrivateRedis]) -> None:
    with pytest.raises(ServerStartError, match=r"no-such-broker-binary not found.*apt-get install"):
        cls(binary="no-such-broker-binary").start()


def test_a_rabbitmq_node_that_exits_while_starting_gives_its_exit_status() -> None:
    """`false` stands in for a node that dies at once (a bad config, a port taken): the error says so, with its status."""
    server = PrivateRabbitMQ(binary="false")
    with pytest.raises(ServerStartError, match=r"exited with status 1 while starting; its log says: \(no log\)"):
        server.start()
    server.stop()
    assert not server.data_dir.exists()


def test_a_redis_server_that_exits_while_starting_is_a_server_start_error() -> None:
    server = PrivateRedis(binary="false", start_timeout_s=5)
    with pytest.raises(ServerStartError, match="did not become ready"):
        server.start()
    assert not server.data_dir.exists(), "its own data directory goes with it"


def test_a_rabbitmq_node_that_refuses_its_config_says_why_though_it_never_opened_its_log() -> None:
    """A real node, given a key its config schema does not know: it prints why on its console before any log file
    exists, and the error carries that line."""

    class Misconfigured(PrivateRabbitMQ):
        def _environment(self) -> dict[str, str]:
            env = super()._environment()
            with open(self.data_dir / "rabbitmq.conf", "a") as conf:
                conf.write("no_such.setting = 1\n")
            return env

    server = Misconfigured(management=False)
    with pytest.raises(ServerStartError, match=r"exited with status \d+ while starting; its log says: .*no_such\.setting"):
        server.start()
    server.stop()
    assert not server.data_dir.exists()
