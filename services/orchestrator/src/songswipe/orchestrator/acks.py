"""Acking source messages in offset order while several actors handle them.

faust commits, per partition, the first run of consecutive acked offsets. Its
guard against a hole at the head of that run lets a hole of exactly one
offset through (``Consumer._new_offset`` in faust-streaming 0.15.3 tests
``min(acked) - committed > 1``; upstream issue #606). With one actor per
agent, messages are acked in offset order and the hole never appears. With
``concurrency`` actors it does: a fast message acked while the message just
before it is still in flight lets faust commit past the unfinished one, and a
crash then skips it.

So the agents iterate with ``stream.noack()`` and hand each event to
``InOrderAcks``: an event is acked only once it and every event received
before it from the same partition are done. faust then only ever sees
consecutive acked offsets, as with a single actor, and commits nothing that
is not finished.

Events of one partition reach ``admit`` in offset order: the actors share
one queue, which the consumer fills in fetch order, and an actor admits the
event it took before it next yields to the event loop.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class Admitted:
    """One event taken by an actor, from the stream that delivered it."""

    stream: Any
    event: Any
    done: bool = False


class InOrderAcks:
    """Per partition, the events in flight, in the order they were received."""

    def __init__(self) -> None:
        self._in_flight: dict[Any, deque[Admitted]] = {}

    def admit(self, stream: Any, event: Any) -> Admitted:
        """Record ``event`` as taken; call before the first ``await`` after it."""
        admitted = Admitted(stream, event)
        self._in_flight.setdefault(event.message.tp, deque()).append(admitted)
        return admitted

    async def done(self, admitted: Admitted) -> None:
        """Mark ``admitted`` finished; ack it and the finished ones behind it.

        An event left unfinished (its actor was cancelled) is never acked, so
        neither is anything after it in its partition: all of it is delivered
        again after a restart.
        """
        admitted.done = True
        tp = admitted.event.message.tp
        queue = self._in_flight.get(tp)
        if queue is None:
            return
        while queue and queue[0].done:
            head = queue.popleft()
            await head.stream.ack(head.event)
        if not queue:
            del self._in_flight[tp]

    def in_flight(self) -> int:
        """Events taken and not yet acked, across partitions."""
        return sum(len(queue) for queue in self._in_flight.values())
