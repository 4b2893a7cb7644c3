"""One base error with a subclass per kind of failure; translated to HTTP only in the app."""

from __future__ import annotations


class BotError(Exception):
    """Base of every error this project raises on purpose."""


class FlowError(BotError):
    """A flow file is broken: carries where (file, line, column) and what."""

    def __init__(self, message: str, *, file: str = "", line: int = 0, column: int = 0) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line, self.column) if p)
        return f"{where}: {self.message}" if where else self.message

    def __repr__(self) -> str:
        return f"FlowError({str(self)!r})"


class StoreError(BotError):
    """The store failed or is unreachable."""


class ChannelError(BotError):
    """A channel's remote API refused or failed a request."""


class ConfigError(BotError):
    """A setting has a value we cannot use (e.g. AGENT_HOURS that does not parse)."""


class HandoffError(BotError):
    """An agent action on a handoff cannot be done as asked."""

    def __init__(self, message: str, *, handoff_id: int) -> None:
        self.handoff_id = handoff_id
        super().__init__(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(handoff_id={self.handoff_id}, {str(self)!r})"


class UnknownHandoff(HandoffError):
    """No handoff has this id."""

    def __init__(self, handoff_id: int) -> None:
        super().__init__(f"no handoff {handoff_id}", handoff_id=handoff_id)


class AlreadyClaimed(HandoffError):
    """Another agent took the handoff first; carries who holds it."""

    def __init__(self, handoff_id: int, *, agent: str, agent_name: str) -> None:
        self.agent = agent
        self.agent_name = agent_name
        super().__init__(f"handoff {handoff_id} is held by {agent}", handoff_id=handoff_id)


class NotHolder(HandoffError):
    """Only the agent holding a handoff may speak for it or hand it back."""

    def __init__(self, handoff_id: int, *, agent: str) -> None:
        self.agent = agent
        super().__init__(f"{agent} does not hold handoff {handoff_id}", handoff_id=handoff_id)


class HandoffClosed(HandoffError):
    """The handoff was released or cancelled already."""

    def __init__(self, handoff_id: int, *, status: str) -> None:
        self.status = status
        super().__init__(f"handoff {handoff_id} is {status}", handoff_id=handoff_id)


class CannedReplyError(BotError):
    """A saved reply that cannot be saved or used as asked; the message says why, in Japanese."""


class AgentExists(BotError):
    """An agent account with this name exists already."""


class UnknownAgent(BotError):
    """No agent account has this name."""


class DeliveryFailed(ChannelError):
    """A message was kept in the transcript but its channel did not take it.

    `retryable`: worth another round later (the channel failed, not our request).
    `maybe_delivered`: the failed try may have reached the user all the same."""

    @property
    def retryable(self) -> bool:
        return False

    @property
    def maybe_delivered(self) -> bool:
        return False


class BadInput(BotError):
    """Input a person typed (an agent's hours, a date) that cannot be used; the message says
    what was expected."""


class SlotTaken(BotError):
    """Someone booked this slot first (the database refused a second booking of it)."""


class UnknownBooking(BotError):
    """No open booking matches (cancelled already, or never made)."""
