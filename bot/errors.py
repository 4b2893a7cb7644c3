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
