"""The stream worker's flushes (streams.agents.flush_producer before an outbox send, and
the app producer's own flush, which Faust awaits before it commits source offsets): each
returns only once every table write handed to Faust's producer before the call is
acknowledged, and says so when the broker failed one. No broker: the producer is a stand-in with the same two
members; the integration failpoint test (test_delivery) covers the real one."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from instructrec.settings import Settings
from streams.agents import flush_producer
from streams.app import ChangelogWriteError, create_app


def _app(producer: Any) -> Any:
    return SimpleNamespace(producer=producer)


class _StandIn:
    def __init__(self) -> None:
        self.unacked: set[asyncio.Future[Any]] = set()
        self.flushes = 0

    def hand_over(self) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.unacked.add(fut)
        fut.add_done_callback(self.unacked.discard)
        return fut

    async def flush(self) -> None:  # Faust's flush: returns with the write still on its way
        self.flushes += 1


def test_the_flush_waits_for_a_write_still_on_its_way() -> None:
    async def scenario() -> list[str]:
        producer = _StandIn()
        order: list[str] = []
        write = producer.hand_over()

        def ack() -> None:
            order.append("acknowledged")
            write.set_result("metadata")

        asyncio.get_running_loop().call_later(0.05, ack)
        await flush_producer(_app(producer))
        order.append("flushed")
        assert producer.flushes == 1 and not producer.unacked
        return order

    assert asyncio.run(scenario()) == ["acknowledged", "flushed"]


def test_a_write_the_broker_failed_is_an_error() -> None:
    async def scenario() -> None:
        producer = _StandIn()
        producer.hand_over().set_result("metadata")
        producer.hand_over().set_exception(OSError("NotEnoughReplicas"))
        await flush_producer(_app(producer))

    with pytest.raises(ChangelogWriteError, match=r"1 of 2 writes failed.*NotEnoughReplicas"):
        asyncio.run(scenario())


def test_writes_handed_over_after_the_call_are_not_waited_for() -> None:
    async def scenario() -> bool:
        producer = _StandIn()
        later: list[asyncio.Future[Any]] = []

        async def flush() -> None:
            later.append(producer.hand_over())  # another agent writes meanwhile

        producer.flush = flush  # type: ignore[method-assign]
        await asyncio.wait_for(flush_producer(_app(producer)), 1.0)
        return later[0].done()

    assert asyncio.run(scenario()) is False


def test_the_worker_apps_producer_keeps_each_write_until_it_is_acknowledged(tmp_path: Any) -> None:
    async def scenario() -> None:
        producer: Any = create_app(Settings(bootstrap_servers="127.0.0.1:9", state_dir=tmp_path)).producer
        write: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        producer.send_soon(write)  # into Faust's send buffer (not started: nothing leaves)
        assert producer.unacked == {write} and producer.buffer.size == 1
        write.set_result("metadata")
        await asyncio.sleep(0)  # done callbacks run on the next turn
        assert producer.unacked == set()

    asyncio.run(scenario())


def test_the_flush_faust_awaits_before_a_commit_waits_for_every_table_write(tmp_path: Any) -> None:
    """Faust's buffer flush gives up on a slow buffer after 0.1 s; the app's producer does
    not let the commit go ahead until the write is acknowledged, or fails."""

    async def scenario(fail: bool) -> list[str]:
        producer: Any = create_app(Settings(bootstrap_servers="127.0.0.1:9", state_dir=tmp_path)).producer
        order: list[str] = []

        async def gives_up() -> int:  # what Faust's buffer flush does when the buffer is slow
            order.append("buffer flush gave up")
            return 0

        producer.buffer.flush = gives_up
        write: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        producer.send_soon(write)

        def ack() -> None:
            order.append("acknowledged")
            if fail:
                write.set_exception(OSError("NotLeaderForPartition"))
            else:
                write.set_result("metadata")

        asyncio.get_running_loop().call_later(0.3, ack)
        await producer.flush()
        order.append("flushed: Faust commits now")
        return order

    assert asyncio.run(scenario(False)) == ["buffer flush gave up", "acknowledged", "flushed: Faust commits now"]
    with pytest.raises(ChangelogWriteError, match=r"1 of 1 writes failed.*NotLeaderForPartition"):
        asyncio.run(scenario(True))


def test_writes_never_acknowledged_are_an_error_after_the_feed_stall_time(tmp_path: Any) -> None:
    """A lost response: Faust's producer would wait its 20-minute request timeout."""

    async def scenario() -> None:
        app: Any = create_app(Settings(bootstrap_servers="127.0.0.1:9", state_dir=tmp_path, feed_stall_s=0.3))
        producer: Any = app.producer

        async def gives_up() -> int:
            return 0

        producer.buffer.flush = gives_up
        producer.send_soon(asyncio.get_running_loop().create_future())  # never acknowledged
        await producer.flush()

    with pytest.raises(ChangelogWriteError, match=r"1 of 1 writes not acknowledged within 0.3 s"):
        asyncio.run(scenario())
