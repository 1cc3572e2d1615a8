"""Claim tokens: which claim calls of a backend lost their reply, per queue and claimer.

A claim's script can run on the server while its reply never reaches the client (the
server stops right after running it): the tasks it took are then owned by a live
claimer and on no queue. Each claim call carries a fresh token, and ``claim.lua`` logs
what it hands over under that token; this module remembers, per ``(queue, owner)``,
the tokens of the calls that failed (until a call that carried them succeeds: its
script handed back what they had taken) and the token of the last call whose reply
arrived (the next call deletes its log, so a claim leaves no log behind for long).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

__all__ = ["CLAIM_LOG_TTL", "MAX_UNCONFIRMED", "ClaimTokens", "Pending"]

CLAIM_LOG_TTL = 86_400
"""Seconds a claim's log (and a recovered one's fence) is kept at most: the time within
which a claim whose reply was lost is recovered by the next claim of the same queue and
claimer. A longer outage (or a restart of the process, which forgets the tokens; its
tasks are then recovered as a dead owner's once its heartbeat is stale) leaves it to
expire."""

MAX_UNCONFIRMED = 1000
"""Failed calls remembered per queue and claimer at most; the first ones are kept.

Only a call that reached the server can have taken anything, which during an outage is
the call in flight when it began; the calls refused afterwards (one per poll) took
nothing, and are remembered only because a refusal cannot always be told from a lost
reply. The cap bounds what a very long outage costs the first claim after it."""


@dataclass
class _Slot:
    unconfirmed: dict[str, None] = field(default_factory=dict)
    received: str = ""


@dataclass(frozen=True)
class Pending:
    """What one claim call carries: its own token, the last token whose reply arrived
    (its log is deleted), and the tokens of the calls that failed since."""

    token: str
    received: str
    unconfirmed: tuple[str, ...]


class ClaimTokens:
    """The claim tokens of one backend, per ``(queue, owner)``."""

    def __init__(self) -> None:
        self._slots: dict[tuple[str, str], _Slot] = {}

    def start(self, queue: str, owner: str) -> Pending:
        """A fresh token for a claim call, with what it must carry."""
        slot = self._slots.get((queue, owner))
        token = secrets.token_hex(12)
        if slot is None:
            return Pending(token, "", ())
        return Pending(token, slot.received, tuple(slot.unconfirmed))

    def succeeded(self, queue: str, owner: str, call: Pending, *, took: bool) -> None:
        """The call's reply arrived: the failed calls it carried are settled, and its own
        log (written when it ``took`` something) is the one the next call deletes."""
        key = (queue, owner)
        slot = self._slots.get(key)
        if slot is None:
            if not took:
                return
            slot = self._slots[key] = _Slot()
        for token in call.unconfirmed:
            slot.unconfirmed.pop(token, None)
        slot.received = call.token if took else ""
        if not slot.unconfirmed and not slot.received:
            del self._slots[key]

    def failed(self, queue: str, owner: str, call: Pending) -> None:
        """The call failed, and its script may have run: the next call recovers it."""
        slot = self._slots.setdefault((queue, owner), _Slot())
        if len(slot.unconfirmed) < MAX_UNCONFIRMED:
            slot.unconfirmed[call.token] = None

    def unconfirmed(self, queue: str, owner: str) -> list[str]:
        """The tokens of the failed calls not yet recovered (for tests)."""
        slot = self._slots.get((queue, owner))
        return [] if slot is None else list(slot.unconfirmed)
