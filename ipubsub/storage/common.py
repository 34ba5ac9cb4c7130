"""Pieces every storage backend shares: :class:`BatchPlan` dedupes an
append batch and turns positions into results; :func:`guard` turns timeouts
and driver errors into :class:`~ipubsub.errors.StorageUnavailable` (without
leaking passwords); :func:`check_identifier`, :func:`url_location` and
:func:`url_password` check and describe config values."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from urllib.parse import unquote, urlsplit

from ..config import ConfigError
from ..errors import StorageUnavailable
from .base import AppendResult, NewMessage

__all__ = ["BatchPlan", "check_identifier", "guard", "url_location", "url_password"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_identifier(value: str, key: str, max_length: int = 48) -> str:
    """Return ``value`` if it is a plain SQL/CQL identifier (it is pasted into
    statements), else raise :class:`ConfigError` naming the config ``key``."""
    if not _IDENTIFIER.fullmatch(value) or len(value) > max_length:
        raise ConfigError(
            f"{key}: must be letters, digits and underscores, not starting with a digit, "
            f"at most {max_length} characters; got {value!r}"
        )
    return value


def url_location(url: str, default_port: int) -> str:
    """``host:port`` of a database URL, without user or password."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts:
        return f"localhost:{default_port}"
    if "," in hosts or ":" in hosts.rpartition("]")[2]:
        return hosts
    return f"{hosts}:{default_port}"


def url_password(url: str) -> str:
    """The password in a database URL (to scrub from error messages), or ``""``."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return ""
    return unquote(password) if password else ""


@asynccontextmanager
async def guard(
    where: str,
    action: str,
    timeout: float,
    errors: tuple[type[BaseException], ...],
    secret: str = "",
) -> AsyncIterator[None]:
    """Bound the body by ``timeout`` seconds and report every way the database
    can fail as :class:`StorageUnavailable` ("postgres at h:5432 unreachable: ...").

    ``errors`` are the driver's exception classes; ``OSError`` is always
    included.  ``secret`` (a password) is scrubbed from the message.
    """
    try:
        async with asyncio.timeout(timeout):
            yield
    except StorageUnavailable:
        raise
    except TimeoutError:
        raise StorageUnavailable(f"{where} did not answer within {timeout:g} s ({action})") from None
    except OSError as exc:
        raise StorageUnavailable(_scrub(f"{where} unreachable ({action}): {exc}", secret)) from exc
    except errors as exc:
        text = f"{where} failed ({action}): {type(exc).__name__}: {exc}"
        raise StorageUnavailable(_scrub(text, secret)) from exc


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


class BatchPlan:
    """One append batch: which messages are first occurrences of their
    ``(stream_id, uuid)``, and the result of each input.

    A backend walks :meth:`streams`, resolves each stream's :meth:`pending`
    messages as :meth:`found` (already stored) or :meth:`stored`, then
    :meth:`results` fills in the later in-batch copies as duplicates.
    """

    def __init__(self, batch: Sequence[NewMessage]) -> None:
        self.batch = batch
        self._results: list[AppendResult | None] = [None] * len(batch)
        self._firsts: dict[str, list[int]] = {}
        self._copies: list[tuple[int, int]] = []
        seen: dict[tuple[str, str], int] = {}
        for index, msg in enumerate(batch):
            first = seen.setdefault((msg.stream_id, msg.uuid), index)
            if first == index:
                self._firsts.setdefault(msg.stream_id, []).append(index)
            else:
                self._copies.append((index, first))

    def streams(self) -> list[str]:
        """The batch's streams in a fixed (sorted) order: the lock order."""
        return sorted(self._firsts)

    def pending(self, stream_id: str) -> list[int]:
        """Indexes of the stream's unresolved first occurrences, in input order."""
        return [i for i in self._firsts[stream_id] if self._results[i] is None]

    def found(self, index: int, position: int, timestamp_us: int) -> None:
        """The message was already stored at ``position``."""
        self._results[index] = AppendResult(position, timestamp_us, duplicate=True)

    def stored(self, index: int, position: int) -> None:
        """The message is now stored at ``position``."""
        self._results[index] = AppendResult(position, self.batch[index].timestamp_us)

    def skip_found(self, stream_id: str, found: Mapping[str, tuple[int, int]]) -> list[int]:
        """Mark pending messages whose uuid is in ``found`` (uuid to position
        and timestamp) as duplicates; return the others' indexes."""
        new = []
        for index in self.pending(stream_id):
            hit = found.get(self.batch[index].uuid)
            if hit is None:
                new.append(index)
            else:
                self.found(index, *hit)
        return new

    def results(self) -> list[AppendResult]:
        """One result per input, in input order.

        Raises:
            RuntimeError: a first occurrence was left unresolved (a bug).
        """
        for index, first in self._copies:
            original = self._results[first]
            if original is not None:
                self._results[index] = AppendResult(
                    original.position, original.timestamp_us, duplicate=True
                )
        if any(result is None for result in self._results):
            raise RuntimeError("append left a message without a result")
        return self._results  # type: ignore[return-value]
