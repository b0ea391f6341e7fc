"""Structured agent logs: every record is an *event* with a name and fields.

``EventLog.emit("renewal-scheduled", renew_at=…)`` logs through the standard
:mod:`logging` module (logger ``certhub.agent``) with ``extra`` fields, so applications
keep their own handlers. :class:`JsonLinesFormatter` writes one JSON object per line
(``{"time", "level", "device", "event", "message", …fields}``) for log collectors;
:func:`configure_logging` sets up stderr with either format.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

__all__ = ["EventLog", "JsonLinesFormatter", "TextFormatter", "configure_logging"]

_LOGGER = "certhub.agent"


class EventLog:
    """Emits named events for one device."""

    __slots__ = ("device", "logger")

    def __init__(self, device: str, logger: logging.Logger | None = None) -> None:
        self.device = device
        self.logger = logger or logging.getLogger(_LOGGER)

    def emit(self, event: str, message: str, level: int = logging.INFO, **fields: Any) -> None:
        """Log ``event`` with ``message`` and machine-readable ``fields``."""
        if not self.logger.isEnabledFor(level):
            return
        extra = {"event": event, "device": self.device, "fields": fields}
        self.logger.log(level, message, extra=extra)


def _value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        device = getattr(record, "device", None)
        if device is not None:
            data["device"] = device
        event = getattr(record, "event", None)
        if event is not None:
            data["event"] = event
        data["message"] = record.getMessage()
        for key, value in (getattr(record, "fields", None) or {}).items():
            data.setdefault(key, _value(value))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time level [device] event: message key=value …`` for people."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        head = f"{when} {record.levelname.lower():7}"
        device = getattr(record, "device", None)
        if device is not None:
            head += f" [{device}]"
        event = getattr(record, "event", None)
        text = (
            f"{head} {event}: {record.getMessage()}" if event else f"{head} {record.getMessage()}"
        )
        fields = getattr(record, "fields", None) or {}
        if fields:
            text += " " + " ".join(f"{k}={_value(v)}" for k, v in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(fmt: str = "text", level: str = "info") -> logging.Handler:
    """Send ``certhub`` logs to stderr in ``fmt`` ("text" or "json"); returns the handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLinesFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("certhub")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    return handler
