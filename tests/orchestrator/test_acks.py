"""``InOrderAcks``: events finished out of order are acked in offset order."""

from __future__ import annotations

from dataclasses import dataclass, field

from songswipe.orchestrator.acks import InOrderAcks


@dataclass(frozen=True)
class Message:
    tp: tuple[str, int]
    offset: int


@dataclass(frozen=True)
class Event:
    message: Message


@dataclass
class Stream:
    """Records what it was asked to ack, like faust's ``Stream.ack``."""

    acked: list[tuple[tuple[str, int], int]] = field(default_factory=list)

    async def ack(self, event: Event) -> bool:
        self.acked.append((event.message.tp, event.message.offset))
        return True


def event(partition: int, offset: int) -> Event:
    return Event(Message(("t", partition), offset))


async def test_an_event_is_acked_after_every_earlier_one_of_its_partition() -> None:
    acks = InOrderAcks()
    stream = Stream()
    first, second, third = (acks.admit(stream, event(0, n)) for n in (10, 11, 12))
    other = acks.admit(stream, event(1, 7))

    await acks.done(second)
    await acks.done(third)
    assert stream.acked == []
    await acks.done(other)
    assert stream.acked == [(("t", 1), 7)]

    await acks.done(first)
    assert stream.acked[1:] == [(("t", 0), 10), (("t", 0), 11), (("t", 0), 12)]
    assert acks.in_flight() == 0


async def test_an_unfinished_event_holds_back_the_acks_behind_it() -> None:
    acks = InOrderAcks()
    stream = Stream()
    acks.admit(stream, event(0, 0))
    later = acks.admit(stream, event(0, 1))

    await acks.done(later)

    assert stream.acked == []
    assert acks.in_flight() == 2
