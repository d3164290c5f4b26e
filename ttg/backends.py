"""The backend registry: everything TTG knows about a broker backend, in one entry per backend.

Config, run, chaos, status, k8s, bench, report and the fixtures read it, so a third backend is its package under
``ttg/brokers/`` plus one name here, and a name or URL scheme nobody registered fails with the list of the ones that
exist: nothing falls back to a default backend.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ttg.brokers import rabbitmq, redis
from ttg.brokers.spec import BackendSpec
from ttg.errors import UnknownBackend

__all__ = ["DEFAULT", "NAMES", "REGISTRY", "SCHEMES", "BackendSpec", "backend", "for_url"]

# A third backend: its package under ttg/brokers/ with a SPEC, and one name here.
REGISTRY: dict[str, BackendSpec] = {spec.name: spec for spec in (redis.SPEC, rabbitmq.SPEC)}
NAMES = tuple(REGISTRY)
DEFAULT = "redis"  # the backend of a run that names none
SCHEMES = tuple(s for spec in REGISTRY.values() for s in spec.schemes)


def backend(name: str) -> BackendSpec:
    """The spec of backend ``name``; UnknownBackend (a ConfigError) names the ones that exist."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownBackend(f"unknown backend {name!r}; known backends: {', '.join(NAMES)}") from None


def for_url(url: str) -> BackendSpec:
    """The backend whose driver serves ``url``'s scheme; UnknownBackend names the schemes that exist."""
    scheme = urlsplit(url).scheme
    for spec in REGISTRY.values():
        if scheme in spec.schemes:
            return spec
    known = ", ".join(f"{s}://" for s in SCHEMES)
    raise UnknownBackend(f"no broker backend handles {scheme or '(no scheme)'}:// URLs; known schemes: {known}")
