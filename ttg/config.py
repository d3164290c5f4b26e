"""Configuration, parsed once into frozen dataclasses.

Precedence: explicit argument / CLI flag > ``TTG_*`` environment variable > default.
This is the only module that reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from ttg import backends
from ttg.errors import ConfigError
from ttg.faults import BROKER_FAULTS, COORDINATOR_FAULTS, KUBERNETES_FAULTS, PROXY_FAULTS, WORKER_FAULTS, FaultSpec, parse_fault, targets_count
from ttg.sweep import SweepSpec, parse_axis

BACKENDS = backends.NAMES
MODES = ("queue", "static")
RUNTIMES = ("local", "kubernetes")
# How result values reach the coordinator: through the broker, or in a staging file on a shared disk with a receipt
# through the broker (ttg.claimcheck); auto: the file for local workers, the broker for pods.
RESULTS_VIA = ("auto", "broker", "file")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def backend_for_url(url: str) -> str:
    """The backend a broker URL's scheme belongs to (``redis`` or ``rabbitmq``); ConfigError for any other scheme."""
    try:
        return backends.for_url(url).name
    except ConfigError:
        *rest, last = [f"{s}://" for s in backends.SCHEMES]
        known = f"{', '.join(rest)} or {last}" if rest else last
        raise ConfigError(f"broker URL must start with {known} (got {redact_url(url)!r}); pass --broker-url or set TTG_BROKER_URL") from None


# Query options that carry a credential in the URL forms the drivers accept (redis-py: ?password=; pika:
# ssl_options, which may hold a key's password): any option whose name contains one of these words is hidden.
_SECRET_OPTION = re.compile(r"pass|secret|token|key|auth|cred|ssl", re.IGNORECASE)


def redact_url(url: str | None) -> str | None:
    """Hide every password form of a URL (``user:pass@``, ``?password=``, ``&token=``...), for logs, titles and records.

    The user-info is cut on the raw text, up to the *last* ``@``: a password holding an unencoded ``#``, ``/`` or
    ``?`` would make a URL parser see no password at all, and such a URL still reaches the driver.
    """
    if not url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<unreadable URL>" if "@" in url else url
    userinfo, at, host_and_rest = rest.rpartition("@")
    if at:
        user = userinfo.split(":", 1)[0] if ":" in userinfo else None
        rest = f"{user}:***@{host_and_rest}" if user is not None else f"{userinfo}@{host_and_rest}"
    try:
        parts = urlsplit(f"{scheme}://{rest}")
    except ValueError:  # unreadable (a bracket in the host): show nothing of what might be a secret
        return "<unreadable URL>"
    query = "&".join(_redact_option(option) for option in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _redact_option(option: str) -> str:
    name, sep, _ = option.partition("=")
    return f"{name}=***" if sep and _SECRET_OPTION.search(unquote(name)) else option


@dataclass(frozen=True)
class Verify:
    """How the coordinator checks results: ``full``, ``sample:N`` or ``off``."""

    kind: str
    sample: int = 0

    @classmethod
    def parse(cls, text: str) -> Verify:
        if text in ("full", "off"):
            return cls(text)
        m = re.fullmatch(r"sample:(\d+)", text)
        if m and int(m.group(1)) > 0:
            return cls("sample", int(m.group(1)))
        raise ConfigError(f"verify must be full, off or sample:N with N > 0 (got {text!r}); pass --verify or set TTG_VERIFY")

    def __str__(self) -> str:
        return f"sample:{self.sample}" if self.kind == "sample" else self.kind


N = TypeVar("N", int, float)


@dataclass(frozen=True)
class _Ranged(Generic[N]):
    """A number within [lo, hi], read from an option or a TTG_* variable; ``metavar`` types it in ``--help``."""

    name: str
    flag: str
    lo: N
    hi: N
    parse: Callable[[Any], N]
    what: str
    fmt: str

    def __call__(self, value: Any) -> N:
        try:
            x = self.parse(value)
        except ValueError:
            raise ConfigError(f"{self.name} must be {self.what} (got {value!r}); pass {self.flag} or set TTG_{self.name.upper()}") from None
        if not self.lo <= x <= self.hi:
            fmt = self.fmt
            raise ConfigError(f"{self.name} must be in {self.lo:{fmt}}..{self.hi:{fmt}} (got {x:{fmt}}); pass {self.flag} or set TTG_{self.name.upper()}")
        return x

    @property
    def metavar(self) -> str:
        kind = "INTEGER" if self.fmt == "," else "FLOAT"
        return f"{kind} {self.lo:{self.fmt}}..{self.hi:{self.fmt}}"


def _int_in(name: str, flag: str, lo: int, hi: int) -> _Ranged[int]:
    return _Ranged(name, flag, lo, hi, lambda v: int(str(v).replace("_", "").replace(",", "")), "a whole number", ",")


def _float_in(name: str, flag: str, lo: float, hi: float) -> _Ranged[float]:
    return _Ranged(name, flag, lo, hi, float, "a number", "g")


@dataclass(frozen=True)
class _OneOf:
    """One of ``choices``; ``metavar`` lists them in ``--help``."""

    name: str
    flag: str
    choices: tuple[str, ...]

    def __call__(self, value: Any) -> str:
        if value not in self.choices:
            raise ConfigError(f"{self.name} must be one of {', '.join(self.choices)} (got {value!r}); pass {self.flag} or set TTG_{self.name.upper()}")
        return str(value)

    @property
    def metavar(self) -> str:
        return "[" + "|".join(self.choices) + "]"


def _choice(name: str, flag: str, choices: tuple[str, ...]) -> _OneOf:
    return _OneOf(name, flag, choices)


def _bool(name: str) -> Callable[[Any], bool]:
    def conv(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{name} must be true or false (got {value!r}); set TTG_{name.upper()}")

    return conv


def _faults(value: Any) -> tuple[FaultSpec, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    return tuple(v if isinstance(v, FaultSpec) else parse_fault(str(v)) for v in value)


MAX_AXIS_TEXT = 100_000  # workers and compute children get the axes as arguments: Linux takes 128 KiB per argument


def _grid(value: Any) -> tuple[str, ...]:
    texts = [v for v in value.split(";") if v.strip()] if isinstance(value, str) else list(value)
    for t in texts:
        name, _ = parse_axis(t)  # fail early, with the axis named
        size = len(t.encode())  # the kernel's limit is in bytes
        if size > MAX_AXIS_TEXT:
            raise ConfigError(
                f"grid axis {name!r} is {size:,} bytes long, more than the {MAX_AXIS_TEXT:,} a worker's argument may hold; use NAME=start:stop:count"
            )
    if (total := sum(len(t.encode()) for t in texts)) > 8 * MAX_AXIS_TEXT:
        raise ConfigError(f"the grid axes are {total:,} bytes long in all, more than a worker's arguments may hold; use NAME=start:stop:count")
    return tuple(t.strip() for t in texts)


def _broker_url(value: Any) -> str | None:
    if value in (None, ""):
        return None
    backend_for_url(str(value))
    from ttg.broker import check_broker_url  # the drivers' parsers; imported late, as brokers import this module

    check_broker_url(str(value))
    return str(value)


@dataclass(frozen=True)
class SweepSettings:
    """Settings shared by the coordinator and every worker of a run."""

    backend: str = backends.DEFAULT
    broker_url: str | None = field(default=None, repr=False)
    algorithm: str = "demo"
    cost_us: float = 0.0
    max_deliveries: int = 3
    reclaim_after_s: float = 3.0
    prefetch: int | None = None  # task messages (RabbitMQ) or chunks (Redis) a worker may hold; None = the backend's own
    log_format: str = "text"
    log_level: str = "info"
    grid: tuple[str, ...] = ()  # NAME=VALUES axes; their product is the sweep's size

    def sweep_spec(self, params: int) -> SweepSpec:
        return SweepSpec.from_axes(self.grid, params)

    def __repr__(self) -> str:  # the URL may hold a password
        return (
            f"SweepSettings(backend={self.backend!r}, broker_url={redact_url(self.broker_url)!r}, "
            f"algorithm={self.algorithm!r}, cost_us={self.cost_us}, max_deliveries={self.max_deliveries}, "
            f"reclaim_after_s={self.reclaim_after_s}, prefetch={self.prefetch}, log_format={self.log_format!r}, "
            f"log_level={self.log_level!r}, grid={self.grid!r})"
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything ``ttg run`` needs, validated."""

    sweep: SweepSettings
    params: int = 1_000_000
    chunk: int = 10_000
    workers: int = 2
    mode: str = "queue"
    faults: tuple[FaultSpec, ...] = ()
    out: Path = Path("runs")
    verify: Verify = Verify("full")
    persistence: bool = False
    timeout_s: float = 3600.0
    seed: int = 0
    runtime: str = "local"  # local processes, or pods of a worker Job on Kubernetes
    namespace: str = "ttg"  # Kubernetes namespace of the run's objects
    image: str = ""  # Kubernetes: the worker and coordinator image ("" = ttg-worker:<version>)
    broker_wait_s: float = 0.0  # how long the coordinator keeps retrying a given broker it cannot reach at the start
    results_via: str = "auto"  # RESULTS_VIA

    @property
    def claim_check(self) -> bool:
        """Whether the workers put result values in the run's staging directory and send receipts (ttg.claimcheck)."""
        return self.results_via == "file" or (self.results_via == "auto" and self.runtime == "local")


# name -> (converter, default); the name is also the TTG_<NAME> environment variable.
_SWEEP_FIELDS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "backend": (_choice("backend", "--backend", BACKENDS), backends.DEFAULT),
    "broker_url": (_broker_url, None),
    "algorithm": (str, "demo"),
    "cost_us": (_float_in("cost_us", "--cost-us", 0.0, 1e7), 0.0),
    "max_deliveries": (_int_in("max_deliveries", "--max-deliveries", 1, 1000), 3),
    "reclaim_after_s": (_float_in("reclaim_after_s", "--reclaim-after", 0.1, 3600.0), 3.0),
    "prefetch": (_int_in("prefetch", "--prefetch", 1, 10_000), None),
    "log_format": (_choice("log_format", "--log-format", LOG_FORMATS), "text"),
    "log_level": (_choice("log_level", "--log-level", LOG_LEVELS), "info"),
    "grid": (_grid, ()),
}
_RUN_FIELDS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "params": (_int_in("params", "--params", 1, 10**12), 1_000_000),
    "chunk": (_int_in("chunk", "--chunk", 1, 1_000_000), 10_000),
    "workers": (_int_in("workers", "--workers", 1, 1024), 2),
    "mode": (_choice("mode", "--mode", MODES), "queue"),
    "faults": (_faults, ()),
    "out": (Path, Path("runs")),
    "verify": (lambda v: v if isinstance(v, Verify) else Verify.parse(str(v)), Verify("full")),
    "persistence": (_bool("persistence"), False),
    "timeout_s": (_float_in("timeout_s", "--timeout", 1.0, 10**7), 3600.0),
    "seed": (_int_in("seed", "--seed", 0, 2**32 - 1), 0),
    "runtime": (_choice("runtime", "--runtime", RUNTIMES), "local"),
    "namespace": (str, "ttg"),
    "image": (str, ""),
    "broker_wait_s": (_float_in("broker_wait_s", "--broker-wait", 0.0, 86_400.0), 0.0),
    "results_via": (_choice("results_via", "--results-via", RESULTS_VIA), "auto"),
}


def setting_converter(name: str) -> Callable[[Any], Any]:
    """The converter of setting ``name`` (the CLI types its option with it, so option and TTG_* variable are read alike)."""
    return {**_SWEEP_FIELDS, **_RUN_FIELDS}[name][0]


def passed_options(**options: Any) -> dict[str, Any]:
    """Only the options the user actually passed (None or an empty repeatable means not passed): the rest falls
    through to TTG_* variables, then defaults."""
    return {k: v for k, v in options.items() if v is not None and v != ()}


def _resolve(table: Mapping[str, tuple[Callable[[Any], Any], Any]], given: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (conv, default) in table.items():
        value = given.get(name)
        if value is None or value == ():
            value = env.get(f"TTG_{name.upper()}")
        out[name] = default if value is None else conv(value)
    return out


def _check_known(given: Mapping[str, Any], *tables: Mapping[str, Any]) -> None:
    unknown = set(given) - {k for t in tables for k in t}
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")


def load_sweep_settings(given: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> SweepSettings:
    given = dict(given or {})
    _check_known(given, _SWEEP_FIELDS)
    return SweepSettings(**_resolve(_SWEEP_FIELDS, given, os.environ if env is None else env))


def load_run_config(given: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> RunConfig:
    """Build a RunConfig from explicit values (None = not given), the environment and defaults."""
    given = dict(given or {})
    _check_known(given, _SWEEP_FIELDS, _RUN_FIELDS)
    env = os.environ if env is None else env
    sweep = load_sweep_settings({k: v for k, v in given.items() if k in _SWEEP_FIELDS}, env)
    cfg = RunConfig(sweep=sweep, **_resolve(_RUN_FIELDS, {k: v for k, v in given.items() if k in _RUN_FIELDS}, env))
    if sweep.grid:
        size = sweep.sweep_spec(cfg.params).params
        params_given = given.get("params") is not None or env.get("TTG_PARAMS") is not None
        if params_given and cfg.params != size:
            raise ConfigError(f"--params {cfg.params:,} disagrees with the --grid axes, which hold {size:,} points; drop --params")
        cfg = dataclasses.replace(cfg, params=size)
    if cfg.chunk > cfg.params:
        raise ConfigError(f"chunk ({cfg.chunk:,}) must not exceed params ({cfg.params:,}); lower --chunk")
    if cfg.sweep.broker_url:
        scheme = urlsplit(cfg.sweep.broker_url).scheme
        if backend_for_url(cfg.sweep.broker_url) != cfg.sweep.backend:
            want = f"{backends.backend(cfg.sweep.backend).schemes[0]}://"
            raise ConfigError(f"--broker-url scheme {scheme}:// does not match --backend {cfg.sweep.backend}; use a {want} URL or change --backend")
    if cfg.results_via == "file" and cfg.runtime != "local":
        raise ConfigError("--results-via file needs workers on the coordinator's disk (--runtime local); pods send values through the broker: drop it")
    for f in cfg.faults:
        check_fault(cfg, f)
    if sum(f.kind in COORDINATOR_FAULTS for f in cfg.faults) > 1:
        raise ConfigError("one coordinator fault per run: the first ends this coordinator; put the next on the ttg run --resume that follows")
    if any(f.info.family == "broker" and f.info.crash for f in cfg.faults) and not backends.backend(cfg.sweep.backend).durable and not cfg.persistence:
        cfg = dataclasses.replace(cfg, persistence=True)  # without AOF the restarted Redis would have lost the run
    return cfg


def check_fault(cfg: RunConfig, f: FaultSpec) -> None:
    """Raise ConfigError when ``f`` cannot be injected into a run of ``cfg`` (also for faults added to a running sweep)."""
    if cfg.runtime == "kubernetes" and not f.info.on_kubernetes:
        raise ConfigError(f"{f} is a local-runtime fault; on Kubernetes use {', '.join(KUBERNETES_FAULTS[:-1])} or {KUBERNETES_FAULTS[-1]}")
    if f.kind in BROKER_FAULTS and cfg.sweep.broker_url:
        raise ConfigError(f"{f} hits the private broker TTG starts, never a shared one; drop --broker-url")
    if f.kind in COORDINATOR_FAULTS and not cfg.sweep.broker_url:
        raise ConfigError(f"{f} leaves the run for ttg run --resume, but a private broker dies with its coordinator; pass --broker-url")
    hit = targets_count(f.target, cfg.workers)
    if f.kind in WORKER_FAULTS and cfg.mode == "queue" and hit is not None and hit >= cfg.workers:
        raise ConfigError(f"{f} would stop all {cfg.workers} worker(s) and leave none to take over; pass more --workers or a smaller /TARGET")
    if f.kind in (*WORKER_FAULTS, *PROXY_FAULTS) and hit is None and cfg.runtime == "local" and f.target not in worker_ids(cfg.workers):
        raise ConfigError(f"{f} names worker {f.target!r}, but this run's workers are w0..w{cfg.workers - 1}")


def worker_ids(workers: int) -> list[str]:
    """The ids the coordinator gives its workers, in start order (fault targets name them)."""
    return [f"w{i}" for i in range(workers)]


def load_management_url(given: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The RabbitMQ management API URL for ``ttg status``: flag > TTG_MANAGEMENT_URL > None (derived from the broker URL)."""
    value = given or (os.environ if env is None else env).get("TTG_MANAGEMENT_URL") or None
    if value is not None and urlsplit(value).scheme not in ("http", "https"):
        raise ConfigError(f"management URL must start with http:// or https:// (got {redact_url(value)!r}); pass --management-url or set TTG_MANAGEMENT_URL")
    return value


_RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def check_run_id(run_id: str) -> str:
    """A run id names a directory and broker keys: 1-64 of ``A-Z a-z 0-9 _ . -``, not starting with ``.`` or ``-``, no ``..``."""
    if not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise ConfigError(f"run id must be 1-64 of A-Z a-z 0-9 _ . - without '..', not starting with '.' or '-' (got {run_id!r}); pass another --run-id")
    return run_id
