"""The Redis connection as TTG uses it: explicit timeouts and retries, redis-py's errors turned into TTG's, Lua
scripts by SHA, and the URL check that runs before anything connects."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ttg.brokers.redis import lua as redis_lua
from ttg.config import redact_url
from ttg.errors import BrokerError, BrokerUnavailable, ConfigError

_P = ParamSpec("_P")
_R = TypeVar("_R")
# A short partition must surface as an error within seconds, not hide behind
# redis-py's default retries; callers (the worker loop) decide how long to keep trying.
SOCKET_TIMEOUT_S = 2.0
MAX_BLOCK_MS = 1000

Entry = tuple[bytes, dict[bytes, bytes]]


def stream_entries(reply: Any) -> list[Entry]:
    """The entries of a one-stream XREAD/XREADGROUP reply ([] when nothing came)."""
    return cast(list[Entry], reply[0][1]) if reply else []


def translate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn redis-py errors into TTG's, where they enter."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise BrokerUnavailable(f"Redis unreachable ({type(e).__name__}: {e}); check the broker URL and that redis-server is running") from None
        except redis.ResponseError as e:
            raise BrokerError(f"Redis refused {fn.__name__}: {e}") from None

    return wrapper


def run_script(client: redis.Redis, source: str, keys: list[str], args: list[Any]) -> Any:
    """EVALSHA, loading the script once when the server does not know it (first use, or after a restart).

    By hand rather than redis-py's Script objects, which add a SCRIPT EXISTS round trip to every pipeline.
    """
    try:
        return client.evalsha(redis_lua.sha(source), len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        client.script_load(source)
        return client.evalsha(redis_lua.sha(source), len(keys), *keys, *args)


def run_scripts(client: redis.Redis, source: str, keys: list[str], calls: list[list[Any]]) -> list[Any]:
    """One EVALSHA of ``source`` per argument list in ``calls``, all in one round trip; their replies in order.

    A call that met NOSCRIPT (first use, or a restart) did not run: the script is loaded and those calls alone run
    again, so each call runs exactly once whatever the server knew."""
    pipe = client.pipeline(transaction=False)
    for args in calls:
        pipe.evalsha(redis_lua.sha(source), len(keys), *keys, *args)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    for i, reply in enumerate(replies):
        if isinstance(reply, redis.exceptions.NoScriptError):
            replies[i] = run_script(client, source, keys, calls[i])
        elif isinstance(reply, Exception):
            raise reply
    return replies


def check_url(url: str) -> None:
    """ConfigError when redis-py cannot read ``url`` (it would fail only at the first connection, with a traceback)."""
    try:
        redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as e:
        raise ConfigError(f"--broker-url {redact_url(url)}: {e}; see redis://[:PASSWORD@]HOST:PORT/DB in the README") from None


def connect(url: str) -> redis.Redis:
    """A client with an explicit timeout and retry policy: a dead or frozen server is an error within ~5 s, not ~30 s."""
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        decode_responses=False,
    )
