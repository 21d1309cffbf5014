"""Benchmark baseline only: the textbook Faust agent -- one table write per event.

``python -m streams.naive`` runs it with the same settings (and embedded-broker profile)
as the real stream worker; ``make bench`` measures both side by side.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import faust
import orjson

from instructrec.settings import Settings
from streams.app import create_app


def build_naive(settings: Settings) -> faust.App:
    app = create_app(settings.model_copy(update={"app_id": settings.app_id + "-naive"}))
    events = app.topic(settings.topics.events, key_type=bytes, value_type=bytes, value_serializer="raw")
    table = app.Table("naive-context", partitions=settings.partitions, key_type=str)

    @app.agent(events)
    async def naive(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for value in stream:
            for event in _as_list(orjson.loads(value)):
                user = event["user_id"]
                context = list(table.get(user) or [])
                context.append([event["item_id"], event["event_type"], event["ts"]])
                table[user] = context[-settings.context_length :]  # one changelog write per event
            yield None

    return app


def _as_list(obj: Any) -> list[Any]:
    return obj if isinstance(obj, list) else [obj]


if __name__ == "__main__":
    from instructrec.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level, component="naive-faust")
    faust.Worker(build_naive(settings), loglevel="INFO", quiet=True, redirect_stdouts=False).execute_from_commandline()
