"""Failpoints: SIGKILL this process at a named point of the delivery path, for tests.

``INSTRUCTREC_FAILPOINTS="stream.after-stage:3,pool.after-publish:1"`` kills the process
the 3rd time the stream worker has flushed a planned request to its outbox (before
sending it), or the 1st time a pool has had results acknowledged (before committing
their offsets). Unset (always, outside tests), a failpoint costs one dict lookup.
The points: ``stream.after-stage``, ``stream.after-send`` (request acknowledged, outbox
not yet cleared), ``stream.after-commit`` (Faust committed the offsets of events or
triggers), ``pool.after-publish``.

Starve points (``stream.starve:N``, ``pool.starve:N``) do not kill: after N records the
worker's consumer silently drops every record it fetches, the way a member that is
assigned but never fed looks from outside (the case instructrec/watchdog.py is for).
``stream.gap:N``: after N records of the user topics, the stream worker drops the next
five unseen, once (a fetch that skipped records).
``stream.hang-send:N``: after N sends, a send of score requests is never acknowledged.
``pool.slow-batch:S`` makes every scoring batch take S seconds more: the long batches of
a loaded machine, on demand. ``stream.slow-changelog:MS`` holds each record in the stream
worker's send buffer MS milliseconds longer: the slow buffer of a loaded machine.
``stream.slow-seek:MS`` holds the stream worker's seek to the committed offsets after an
assignment MS milliseconds: a slow answer, with the partitions already resumed.
"""

from __future__ import annotations

import os
import signal

from instructrec.logs import get_logger

_ARMED: dict[str, int] = {}
for _part in filter(None, os.environ.get("INSTRUCTREC_FAILPOINTS", "").split(",")):
    _name, _, _count = _part.partition(":")
    _ARMED[_name.strip()] = int(_count or 1)


def failpoint(name: str) -> None:
    left = _ARMED.get(name)
    if left is None:
        return
    _ARMED[name] = left - 1
    if left - 1 <= 0:
        get_logger(__name__).warning("failpoint hit: SIGKILL", failpoint=name)
        os.kill(os.getpid(), signal.SIGKILL)


def armed(name: str) -> bool:
    return name in _ARMED


def starving(name: str) -> bool:
    """False for the first N calls of an armed starve point, then True for good."""
    left = _ARMED.get(name)
    if left is None:
        return False
    if left > 0:
        _ARMED[name] = left - 1
        if left == 1:
            get_logger(__name__).warning("failpoint hit: starving from now on", failpoint=name)
        return False
    return True


def slowdown(name: str) -> int:
    """What an armed slow point adds, in its own unit (0 when not armed)."""
    return _ARMED.get(name, 0)


_SKIPPED: dict[str, int] = {}


def skipping(name: str, run: int = 5) -> bool:
    """False for the first N calls of an armed skip point, True for the next ``run``, then
    False for good."""
    left = _ARMED.get(name)
    if left is None:
        return False
    if left > 0:
        _ARMED[name] = left - 1
        return False
    done = _SKIPPED.get(name, 0)
    if done >= run:
        return False
    _SKIPPED[name] = done + 1
    if done == 0:
        get_logger(__name__).warning("failpoint hit: skipping records", failpoint=name, records=run)
    return True
