"""The node-to-node link: one long-lived, authenticated TCP connection per
ordered pair of nodes, carrying many concurrent calls as length-prefixed
binary frames (see :mod:`.frames`).  Nothing here knows what the calls mean:
the cluster layer defines their headers and handles them."""

from .client import Call, LinkClient, Reply
from .connection import LinkLimits
from .errors import CallAborted, CallRefused, CallTimeout, LinkBusy, LinkDown, LinkError, LinkRejected
from .handshake import FailedAttempts, Identity
from .server import Incoming, LinkServer, Peer

__all__ = [
    "Call",
    "CallAborted",
    "CallRefused",
    "CallTimeout",
    "FailedAttempts",
    "Identity",
    "Incoming",
    "LinkBusy",
    "LinkClient",
    "LinkDown",
    "LinkError",
    "LinkLimits",
    "LinkRejected",
    "LinkServer",
    "Peer",
    "Reply",
]
