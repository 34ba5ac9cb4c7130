"""Who may do what: API keys and browser JWTs (:mod:`.authenticator`,
:mod:`.jwt_tokens`), stream patterns (:mod:`.patterns`), route
declarations and principals (:mod:`.access`), rates (:mod:`.rate`) and the
refusal counters (:mod:`.refusals`).  :mod:`.jwt_tokens` (PyJWT) is
imported only where tokens are used.  No aiohttp here: the request guard
that applies all this is :mod:`ipubsub.api.guard`."""

from .access import Access, Permission, Principal, default_access, route_access
from .authenticator import Authenticator, key_digest
from .patterns import StreamPatterns

__all__ = [
    "Access",
    "Authenticator",
    "Permission",
    "Principal",
    "StreamPatterns",
    "default_access",
    "key_digest",
    "route_access",
]
