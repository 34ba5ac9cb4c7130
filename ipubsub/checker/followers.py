"""Fan-out readers for the checker: streams created with a history, each
followed by two readers from its oldest message with ``fromHistory=true``,
``maxMessages`` and the ``position`` of their last answer (through random
nodes, like every other call).  Every message read is a ``recv`` line
(``src: history``, its ``pos``), and every answer that says the position
could not be recovered a ``gap`` line, for :mod:`.history_analysis`.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .workload import Workload

__all__ = ["HISTORY_FIELDS", "Followers"]

#: what a history stream's sends carry: a history that outlives the run, and
#: a queue of one (nobody takes from it: each send drops the one before)
HISTORY_FIELDS = {"inMemoryStreamSize": 1, "historySize": 100_000, "historyTTLSeconds": 3600}
READERS_PER_STREAM = 2


class Followers:
    """The history readers of one workload (tasks of the workload)."""

    def __init__(self, workload: Workload) -> None:
        self.w = workload

    def spawn(self) -> None:
        for s, stream in enumerate(self.w.streams.get("history", [])):
            for r in range(READERS_PER_STREAM):
                name = f"hf{s}.{r}"
                self.w.spawn(name, self._follow(name, stream))

    async def _follow(self, name: str, stream: str) -> None:
        w = self.w
        rng = random.Random(f"{w.seed}/{name}")
        seen: set[str] = set()
        position: str | None = None

        def outstanding() -> set[str]:
            return w.acked_sends(stream) - seen

        while not w.done(name, outstanding):
            via, url = rng.choice(w.targets())
            params = {"streamId": stream, "fromHistory": "true", "timeoutSeconds": "2",
                      "maxMessages": str(rng.randint(1, 50))}
            if position is not None:
                params["position"] = position
            h = w.history
            t0 = h.now()
            out = await w.caller.receive(url, params, 10.0)
            t1 = h.now()
            body = out.body if out.res == "ok" and out.body is not None else None
            if body is None:
                h.write({"ev": "recv", "r": name, "src": "history", "m": "history", "st": stream, "t0": t0,
                         "t1": t1, "via": via, "res": out.res, "status": out.status, "code": out.code})
                if out.res != "empty":
                    await asyncio.sleep(rng.uniform(0.05, 0.3))
                continue
            messages = body.get("messages") or []
            if body.get("recovered") is False:
                h.write({"ev": "gap", "r": name, "st": stream, "t0": t0, "t1": t1, "via": via,
                         "gap": body.get("gap"), "after": position, "to": body.get("position")})
            for k, m in enumerate(messages):
                uuid = str(m.get("messageUuid"))
                seen.add(uuid)
                h.write({"ev": "recv", "r": name, "src": "history", "m": "history", "st": stream, "t0": t0, "t1": t1,
                         "via": via, "res": "ok", "status": 200, "code": "", "k": k, "uuid": uuid,
                         "p": m.get("message"), "pos": m.get("position")})
            w.received += len(messages)
            if body.get("position"):
                position = str(body["position"])
            elif body.get("recovered") is False:
                position = None  # no history there yet: go on from its first message (no busy loop)
            if messages:
                w.empty_poll(name, reset=True)
            elif w.draining:
                w.empty_poll(name)
