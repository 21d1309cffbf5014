"""Feed watchdog: notices a partition that is assigned, has records waiting past what the
worker has taken, and has not moved for ``stall_s``.

Seen on the embedded broker (issue 5): a member that joined, was assigned, recovered and
reported ready was then never given another record, while its partitions filled. Nothing
in Faust or librdkafka notices that. The watchdog does, from outside the client: the
broker's high watermark (asked by a separate request) is past the offset the worker needs
next, and that offset has not moved. First remedy: seek the partition to where it stands
(the client drops its fetch state and fetches again); if it is still not fed after another
``stall_s``, the worker stops gracefully and exits with :data:`RESTART_EXIT_CODE`, and its
supervisor starts it again (``instructrec run`` does; systemd ``Restart=on-failure`` and
Kubernetes do for any non-zero exit). Nothing is lost by the restart: uncommitted records
are read again and the stream worker's outbox re-sends what it planned.

A high watermark is only ever taken as a lower bound (Tansu reports it short), so an
idle partition is never called stalled; one the worker paused itself is not watched.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# EX_TEMPFAIL: "try again". A supervisor restarts a process that exits with it.
RESTART_EXIT_CODE = 75


class Verdict(Enum):
    OK = "ok"
    SEEK = "seek"
    RESTART = "restart"


@dataclass
class _Track:
    position: int | None  # the next offset the worker needs; None: not known yet
    since: float  # when it last moved (or was last found fed)
    seeks: int = 0


class FeedWatchdog(Generic[K]):
    def __init__(self, stall_s: float, seeks_before_restart: int = 1) -> None:
        if stall_s <= 0:
            raise ValueError("stall_s must be > 0")
        self.stall_s = stall_s
        self.seeks_before_restart = seeks_before_restart
        self._tracks: dict[K, _Track] = {}
        self._fed_at: float | None = None  # when any watched partition last moved

    def note(self, positions: Mapping[K, int | None], now: float) -> list[K]:
        """Record where each watched partition stands; partitions not named are no longer
        watched. Returns those that have not moved for ``stall_s`` while no other partition
        moved either (ask their end offsets): a member busy with some partitions (a slow or
        saturated one, which a broker may serve unevenly) is working, not stalled."""
        for key in self._tracks.keys() - positions.keys():
            del self._tracks[key]
        if self._fed_at is None:
            self._fed_at = now
        idle = []
        for key, position in positions.items():
            track = self._tracks.get(key)
            if track is None:
                self._tracks[key] = _Track(position, now)
            elif track.position != position:  # it moved: fed
                track.position, track.since, track.seeks = position, now, 0
                self._fed_at = now
            elif now - track.since >= self.stall_s:
                idle.append(key)
        return idle if now - self._fed_at >= self.stall_s else []

    def position(self, key: K) -> int | None:
        track = self._tracks.get(key)
        return track.position if track is not None else None

    def judge(self, key: K, end: int | None, now: float) -> Verdict:
        """``end``: the partition's high watermark (a lower bound of its real end), or
        None when it could not be asked (broker unreachable: not this watchdog's case)."""
        track = self._tracks.get(key)
        if track is None or end is None or track.position is None:
            return Verdict.OK
        if end <= track.position:  # nothing waiting: idle, not stalled
            track.since, track.seeks = now, 0
            return Verdict.OK
        if now - track.since < self.stall_s:
            return Verdict.OK
        track.since = now
        if track.seeks < self.seeks_before_restart:
            track.seeks += 1
            return Verdict.SEEK
        return Verdict.RESTART

    def forget(self, keys: Iterable[K] | None = None) -> None:
        """Stop watching ``keys`` (all when None), e.g. across a rebalance."""
        if keys is None:
            self._tracks.clear()
            self._fed_at = None
        else:
            for key in keys:
                self._tracks.pop(key, None)
