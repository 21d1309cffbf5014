"""structlog, configured once per process: contextvars, ISO UTC time, JSON via orjson.

Every string value of a log line (and every stdlib log message, Faust's included) is cut
to ``max_chars``: logs never carry raw free text (intentions, titles, message bytes)
beyond a truncated form. Secrets are ``SecretStr`` in the settings and never logged."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def _orjson_dumps(obj: object, default: object = None) -> str:
    return orjson.dumps(obj, default=default).decode()  # type: ignore[arg-type]


DEFAULT_MAX_CHARS = 200


def truncate(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}…(+{len(text) - max_chars} chars)"


def _truncating(max_chars: int) -> structlog.typing.Processor:
    def processor(_logger: object, _name: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        for key, value in event.items():
            if isinstance(value, str) and len(value) > max_chars:
                event[key] = truncate(value, max_chars)
            elif isinstance(value, bytes):
                event[key] = truncate(repr(value), max_chars)
        return event

    return processor


class TruncatingFilter(logging.Filter):
    """For stdlib handlers (ours, and the ones Faust installs): the rendered message cut
    to ``max_chars``."""

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        super().__init__()
        self.max_chars = max_chars

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if len(message) > self.max_chars:
            record.msg, record.args = truncate(message, self.max_chars), ()
        return True


def configure_logging(
    fmt: str = "console", level: str = "INFO", component: str | None = None, max_chars: int = DEFAULT_MAX_CHARS
) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _truncating(max_chars),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(TruncatingFilter(max_chars * 5))  # tracebacks and tables get a little more room
    logging.basicConfig(level=max(numeric, logging.WARNING), handlers=[handler])
    if component:
        structlog.contextvars.bind_contextvars(component=component)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
