"""At-least-once consumers for the checker: leased receives of in-memory
streams, and a consumer group on every durable stream.

A consumer calls its stream's owner (found with ``GET /api/v1/streams/owner``,
as the Python client routes): a lease lives on the owner and its ack must
reach it.  One delivery in ten is never acknowledged, as by a consumer that
crashed: it must come back once its lease ends.  Every delivery is a
``recv`` line (``src`` ``lease`` or ``group``, with its receipt and delivery
count) and every ack an ``ack`` line, for :mod:`.leases_analysis`.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

import msgspec

from ..protocol import ACK_PATH, OWNER_PATH
from .client import Outcome

if TYPE_CHECKING:
    from .workload import Workload

__all__ = ["GROUP", "LEASE_SECONDS", "Consumers"]

LEASE_SECONDS = 3
GROUP = "g"
#: share of deliveries a consumer drops without an ack (a crash)
CRASH_RATE = 0.1
CONSUMERS_PER_STREAM = 2


class Consumers:
    """The at-least-once consumers of one workload (their tasks are the
    workload's, so it starts, drains and stops them)."""

    def __init__(self, workload: Workload) -> None:
        self.w = workload
        self.consumed: dict[str, set[str]] = {}  # stream -> uuids whose ack succeeded
        self._owners: dict[str, tuple[float, str, str]] = {}  # stream -> (until, name, url)

    def spawn(self) -> None:
        for kind, mode in (("lease", "leased"), ("group", "durable")):
            for s, stream in enumerate(self.w.streams.get(mode, [])):
                self.consumed[stream] = set()
                for r in range(CONSUMERS_PER_STREAM):
                    name = f"{kind[0]}c{s}.{r}"
                    self.w.spawn(name, self._consume(name, kind, mode, stream))

    async def _consume(self, name: str, kind: str, mode: str, stream: str) -> None:
        w = self.w
        rng = random.Random(f"{w.seed}/{name}")
        consumed = self.consumed[stream]

        def outstanding() -> set[str]:
            return w.acked_sends(stream) - consumed

        while not w.done(name, outstanding):
            via, url = await self._owner(stream, rng)
            params = {"streamId": stream, "timeoutSeconds": "2", "leaseSeconds": str(LEASE_SECONDS)}
            if kind == "group":
                params.update(readFromDB="true", group=GROUP, consumer=name)
            else:
                params["maxDeliveries"] = "0"  # never dead-lettered: every message must be acknowledged
            batch = rng.random() < 0.3
            if batch:
                params["maxMessages"] = str(rng.randint(2, 5))
            t0 = w.history.now()
            out = await w.caller.receive(url, params, 10.0)
            deliveries = self._record(name, kind, mode, stream, via, t0, out, batch)
            if out.res == "empty" and w.draining:
                w.empty_poll(name)
            elif deliveries:
                w.empty_poll(name, reset=True)
            elif out.res != "empty":
                self._owners.pop(stream, None)
                await _pause(rng)
            keep = [d for d in deliveries if rng.random() >= CRASH_RATE]
            if keep:
                await self._ack(name, kind, stream, keep, rng)

    def _record(self, name: str, kind: str, mode: str, stream: str, via: str, t0: float, out: Outcome,
                batch: bool) -> list[dict[str, Any]]:
        h = self.w.history
        t1 = h.now()
        body = out.body if out.res == "ok" and out.body is not None else None
        if body is None:
            h.write({"ev": "recv", "r": name, "src": kind, "m": mode, "st": stream, "t0": t0, "t1": t1, "via": via,
                     "res": out.res, "status": out.status, "code": out.code})
            return []
        deliveries = body.get("messages", []) if batch else [body]
        for k, d in enumerate(deliveries):
            h.write({"ev": "recv", "r": name, "src": kind, "m": mode, "st": stream, "t0": t0, "t1": t1, "via": via,
                     "res": "ok", "status": out.status, "code": "", "k": k, "uuid": str(d.get("messageUuid")),
                     "p": d.get("message"), "receipt": d.get("receipt"), "dc": d.get("deliveryCount")})
        self.w.received += len(deliveries)
        return list(deliveries)

    async def _ack(self, name: str, kind: str, stream: str, deliveries: list[dict[str, Any]],
                   rng: random.Random) -> None:
        w = self.w
        receipts = [str(d.get("receipt")) for d in deliveries]
        uuids = [str(d.get("messageUuid")) for d in deliveries]
        body: dict[str, Any] = {"streamId": stream, "receipts": receipts}
        if kind == "group":
            body["group"] = GROUP
        for _ in range(3):  # a real consumer retries an ack it could not deliver
            via, url = await self._owner(stream, rng)
            t0 = w.history.now()
            out = await w.caller.request("POST", url + ACK_PATH, body=msgspec.json.encode(body))
            missing = list((out.body or {}).get("notFound") or []) if out.res == "ok" else []
            w.history.write({"ev": "ack", "r": name, "src": kind, "st": stream, "t0": t0, "t1": w.history.now(),
                             "via": via, "res": out.res, "status": out.status, "code": out.code,
                             "receipts": receipts, "uuids": uuids, "notFound": missing})
            if out.res == "ok":
                self.consumed[stream].update(u for u, r in zip(uuids, receipts) if r not in missing)
                return
            if out.status and out.status < 500:
                return  # refused for good (the leases are gone): the messages come back
            self._owners.pop(stream, None)
            await _pause(rng)

    async def _owner(self, stream: str, rng: random.Random) -> tuple[str, str]:
        """``(name, url)`` of the node that owns ``stream`` (asked at most
        once a second; a random node if no one answers)."""
        now = time.monotonic()
        known = self._owners.get(stream)
        if known is not None and known[0] > now:
            return known[1], known[2]
        targets = self.w.targets()
        via, url = rng.choice(targets)
        out = await self.w.caller.request("GET", url + OWNER_PATH, params={"streamId": stream}, timeout=3.0)
        if out.res != "ok" or out.body is None:
            return via, url
        name = str(out.body.get("node"))
        owner_url = dict(targets).get(name) or f"http://{out.body.get('address')}"
        self._owners[stream] = (now + 1.0, name, owner_url)
        return name, owner_url


async def _pause(rng: random.Random) -> None:
    import asyncio

    await asyncio.sleep(rng.uniform(0.05, 0.3))
