"""How a call over a link can fail.

Every failure says whether the request **may have reached** the peer:
``False`` means it surely had no effect there (never written to the socket,
refused before dispatch, or the link could not be opened), so the caller may
retry it anywhere; ``True`` means the peer may have acted on it.
"""

from __future__ import annotations

__all__ = ["CallAborted", "CallRefused", "CallTimeout", "LinkBusy", "LinkDown", "LinkError", "LinkRejected"]


class LinkError(Exception):
    """A call over a link did not get an answer."""

    def __init__(self, address: str, reason: str, *, may_have_reached: bool) -> None:
        super().__init__(f"link to {address}: {reason}")
        self.address = address
        self.reason = reason
        self.may_have_reached = may_have_reached


class LinkDown(LinkError):
    """The link could not be opened, or it closed before the answer came."""


class LinkRejected(LinkDown):
    """The peer refused the handshake (wrong cluster or secret), or failed
    to prove the secret itself.  The call was not sent."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(address, reason, may_have_reached=False)


class CallRefused(LinkError):
    """The call was refused before any handler saw it (the peer is at its
    limit of calls in flight, shutting down, or could not decode it)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(address, reason, may_have_reached=False)


class LinkBusy(CallRefused):
    """Refused here, not sent: too many calls in flight on the link, or too
    many bytes waiting for a peer that does not read them."""


class CallTimeout(LinkError):
    """No answer by the call's deadline, nor within the grace period after
    the peer was asked to cancel it."""

    def __init__(self, address: str, waited: float) -> None:
        super().__init__(address, f"no answer after {waited:.1f}s", may_have_reached=True)


class CallAborted(LinkError):
    """The peer ended the call without an answer: it was cancelled at the
    caller's request, or its handler failed.  Its effect is unknown."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(address, reason, may_have_reached=True)
