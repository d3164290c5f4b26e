"""One error tree for TTG.

Driver errors (redis, pika, OS) are translated into these at the boundary where
they enter, so callers never catch a third-party exception type.
"""

from __future__ import annotations


class TTGError(Exception):
    """Base of every error TTG raises on purpose."""


class ConfigError(TTGError):
    """A setting is missing, malformed or out of range.

    The CLI maps it to exit status 2 and prints the message as one line, so the
    message must say which setting, what was expected, what came, and how to fix it.
    """


class BrokerError(TTGError):
    """The broker rejected an operation or answered something unexpected."""


class BrokerUnavailable(BrokerError):
    """The broker could not be reached within the configured retry policy."""


class PublishRefused(BrokerError):
    """The broker refused a published message (RabbitMQ's basic.nack: a full queue, an internal error)."""


class UnknownBackend(ConfigError):
    """A broker URL scheme or backend name that no registered backend handles."""


class MissingDriver(ConfigError):
    """A backend's client library (redis, pika) is not installed; the message names the extra to install."""


class RunConflict(ConfigError):
    """The run id is taken: its state exists (results on disk, keys or queues on the broker) or another coordinator holds it.

    Exit status 2: the message names the command that resumes the run and the one that discards it.
    """


class FaultNotInjected(TTGError):
    """A fault could not be injected into this run: what it needs is not there (a private broker, a live worker,
    the fault proxies). The fault is recorded "not injected", never "recovered"."""


class MessageError(TTGError):
    """A broker message failed decoding or schema checks.

    The worker dead-letters such a message with this error's text and carries on.
    """


class AlgorithmError(TTGError):
    """The algorithm could not be loaded, or returned something of the wrong shape."""


class AlgorithmNotFound(AlgorithmError, ConfigError):
    """``--algorithm`` names nothing importable and callable (a configuration error: exit 2)."""


class ServerStartError(TTGError):
    """A private broker process could not be started or did not become ready."""


class RuntimeStartError(TTGError):
    """Workers could not be started by the runtime."""


class VerdictFailed(TTGError):
    """Raised by ``Verdict.raise_for_failure()`` when the sweep lost, duplicated or mis-computed work."""
