"""Logging set-up for TTG processes: text or JSON lines, with run, worker and chunk ids on every record."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# Context attributes shown when present, in this order.
_CONTEXT = ("run_id", "worker_id", "chunk_id", "entry", "deliveries", "event")
_STD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _ContextFilter(logging.Filter):
    def __init__(self, context: dict[str, str]) -> None:
        super().__init__()
        self.context = context

    def filter(self, record: logging.LogRecord) -> bool:
        for k, v in self.context.items():
            if not hasattr(record, k):
                setattr(record, k, v)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    extra = {k: v for k, v in record.__dict__.items() if k not in _STD and not k.startswith("_")}
    ordered = {k: extra.pop(k) for k in _CONTEXT if k in extra}
    ordered.update(extra)
    return ordered


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_extras(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{self.formatTime(record, '%H:%M:%S')}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: {record.getMessage()}"
        line = f"{line} [{ctx}]" if ctx else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(fmt: str = "text", level: int = logging.INFO, **context: str) -> None:
    """Configure the root logger of a TTG process once, to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter(context))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pika logs every failed connection attempt at ERROR; TTG reports broker trouble itself, once, with advice.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
