"""Apache Cassandra backend (cassandra-driver, bridged to asyncio).

Tables in ``{keyspace}``: ``{table}`` (one partition per stream, clustered
by position, each row written ``USING TTL`` so Cassandra drops it when it
expires), ``{table}_streams`` (the per-stream counter) and ``{table}_uuids``
(one row per ``(stream_id, uuid)``, same TTL as its message).

An append, per stream: (1) reserve ``n`` positions with a compare-and-set on
the counter row (LWT: ``INSERT ... IF NOT EXISTS`` the first time, then
``UPDATE ... IF last_position = ?``), so no position is ever handed out
twice; (2) claim each uuid with ``INSERT ... IF NOT EXISTS`` on the uuid
table, which records the reserved position; a lost claim means the message
is a duplicate and the claim's position is returned (its reserved position
stays unused: a gap, never a reuse); (3) write the message rows, one after
another in position order.  If a previous attempt died between (2) and (3),
a later duplicate finds the claim without its message and writes it.

Ordering guarantee, weaker than the SQL backends (there is no multi-row
transaction): positions are reserved before the rows are written, so while a
writer on ANOTHER node sharing the keyspace is between (1) and (3), a
reader may see its later position before its earlier one and, resuming after
the later one, skip the earlier message.  Within one node this cannot
happen: this store serializes its appends (an :class:`asyncio.Lock`) and
writes rows in position order, and the cluster routes a stream's writes to
its owner node.  ``delete_expired`` is a no-op: expiry is native (TTL);
reads still filter on ``expires_at_us``.  Expired rows leave tombstones
until compaction (``gc_grace_seconds`` is lowered to 3 hours: rows are
never deleted explicitly); a reader starting at ``after=None`` on a stream
with many expired messages scans them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

try:
    from cassandra import ConsistencyLevel, DriverException
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import (
        EXEC_PROFILE_DEFAULT,
        Cluster,
        ExecutionProfile,
        NoHostAvailable,
        ResponseFuture,
        ResultSet,
        Session,
    )
    from cassandra.query import PreparedStatement, dict_factory
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the cassandra backend needs cassandra-driver: pip install 'ipubsub[cassandra]'"
    ) from exc

from ..config import CassandraConfig
from ..errors import StorageUnavailable
from .base import (
    AppendResult,
    Claim,
    GroupInfo,
    LeaseRef,
    MessageStore,
    NewMessage,
    SpilledStream,
    StoredMessage,
)
from .cassandra_groups import GROUP_SCHEMA, GROUP_STATEMENTS, CassandraGroups, Rows
from .common import BatchPlan, check_identifier, guard

__all__ = ["CassandraStore"]

_DRIVER_ERRORS = (DriverException, NoHostAvailable)
_MAX_TTL_SECONDS = 20 * 365 * 86400  # Cassandra's limit is 20 years
_MAX_CAS_ATTEMPTS = 50
_READ_PAGE = 1000
_OPEN_TIMEOUT_SECONDS = 30.0  # schema changes wait for agreement across nodes
_CACHED_COUNTERS = 10_000

_SCHEMA = (
    "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication ="
    " {{'class': 'SimpleStrategy', 'replication_factor': {rf}}}",
    "CREATE TABLE IF NOT EXISTS {ks}.{t} (stream_id text, position bigint, message_uuid text,"
    " payload blob, timestamp_us bigint, expires_at_us bigint, PRIMARY KEY ((stream_id), position))"
    " WITH CLUSTERING ORDER BY (position ASC) AND gc_grace_seconds = 10800",
    "CREATE TABLE IF NOT EXISTS {ks}.{t}_streams (stream_id text PRIMARY KEY, last_position bigint)",
    "CREATE TABLE IF NOT EXISTS {ks}.{t}_uuids (stream_id text, message_uuid text, position bigint,"
    " timestamp_us bigint, expires_at_us bigint, PRIMARY KEY ((stream_id, message_uuid)))"
    " WITH gc_grace_seconds = 10800",
)
_STATEMENTS = {
    "counter_create": "INSERT INTO {ks}.{t}_streams (stream_id, last_position) VALUES (?, ?) IF NOT EXISTS",
    "counter_cas": "UPDATE {ks}.{t}_streams SET last_position = ? WHERE stream_id = ? IF last_position = ?",
    "claim": "INSERT INTO {ks}.{t}_uuids (stream_id, message_uuid, position, timestamp_us, expires_at_us)"
    " VALUES (?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?",
    "insert": "INSERT INTO {ks}.{t} (stream_id, position, message_uuid, payload, timestamp_us,"
    " expires_at_us) VALUES (?, ?, ?, ?, ?, ?) USING TTL ?",
    "exists": "SELECT position FROM {ks}.{t} WHERE stream_id = ? AND position = ?",
    "read": "SELECT position, message_uuid, payload, timestamp_us, expires_at_us FROM {ks}.{t}"
    " WHERE stream_id = ? AND position > ? LIMIT ?",
    "read_latest": "SELECT position, message_uuid, payload, timestamp_us, expires_at_us FROM {ks}.{t}"
    " WHERE stream_id = ? ORDER BY position DESC LIMIT ?",
    "ping": "SELECT release_version FROM system.local",
}


def statements() -> dict[str, str]:
    """Every statement the store prepares, by name (``{ks}``/``{t}`` unfilled)."""
    return {**_STATEMENTS, **GROUP_STATEMENTS}


def ttl_seconds(expires_at_us: int, now_us: int) -> int:
    """Cassandra TTL for a message: whole seconds left, rounded up, at least 1."""
    remaining_us = expires_at_us - now_us
    return max(1, min(_MAX_TTL_SECONDS, -(-remaining_us // 1_000_000)))


def stored_messages(stream_id: str, rows: Sequence[dict[str, Any]], now_us: int) -> list[StoredMessage]:
    """The alive messages among rows of the ``read`` statement (a null blob
    is how Cassandra returns an empty payload)."""
    return [
        StoredMessage(
            stream_id, row["position"], row["message_uuid"], row["payload"] or b"",
            row["timestamp_us"], row["expires_at_us"],
        )
        for row in rows
        if row["expires_at_us"] > now_us
    ]


class CassandraStore(MessageStore):
    """Message log in a Cassandra keyspace (see the module notes on ordering).

    Args:
        config: ``storage.cassandra`` (hosts, port, keyspace, table,
            replication factor for a keyspace it creates, credentials).
        operation_timeout_seconds: bound on every call (``open`` gets at least
            30 s: creating tables waits for schema agreement).
    """

    name = "cassandra"

    def __init__(self, config: CassandraConfig, *, operation_timeout_seconds: float = 5.0) -> None:
        self._config = config
        self._keyspace = check_identifier(config.keyspace, "storage.cassandra.keyspace")
        self._table = check_identifier(config.table, "storage.cassandra.table", max_length=40)
        self._timeout = operation_timeout_seconds
        self._where = f"cassandra at {','.join(config.hosts)}:{config.port}"
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._prepared: dict[str, PreparedStatement] = {}
        self._lock = asyncio.Lock()
        self._counters: dict[str, int] = {}  # last position seen per stream: a CAS hint
        self._groups = CassandraGroups(self._run_all, self._read_after, ttl_seconds)

    def _guard(self, action: str, timeout: float | None = None) -> Any:
        return guard(
            self._where, action, timeout or self._timeout, _DRIVER_ERRORS, self._config.password
        )

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create keyspace and tables if missing, prepare statements."""
        try:
            async with self._guard("open", max(self._timeout, _OPEN_TIMEOUT_SECONDS)):
                if self._cluster is None:
                    self._cluster = self._new_cluster()
                if self._session is None:
                    self._session = await asyncio.to_thread(self._cluster.connect)
                self._prepared = await asyncio.to_thread(self._setup, self._session)
        except BaseException:
            await self.close()  # a cluster whose connect failed is shut down: start afresh
            raise

    def _new_cluster(self) -> Cluster:
        config = self._config
        profile = ExecutionProfile(
            consistency_level=ConsistencyLevel.LOCAL_QUORUM,
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
            request_timeout=self._timeout,
            row_factory=dict_factory,
        )
        auth = PlainTextAuthProvider(config.username, config.password) if config.username else None
        return Cluster(
            contact_points=list(config.hosts),
            port=config.port,
            auth_provider=auth,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=self._timeout,
            control_connection_timeout=self._timeout,
        )

    def _setup(self, session: Session) -> dict[str, PreparedStatement]:
        """Create the schema and prepare statements (blocking: runs in a thread)."""
        names = {"ks": self._keyspace, "t": self._table, "rf": self._config.replication_factor}
        for statement in (*_SCHEMA, *GROUP_SCHEMA):
            session.execute(statement.format(**names), timeout=_OPEN_TIMEOUT_SECONDS)
        return {key: session.prepare(cql.format(**names)) for key, cql in statements().items()}

    async def close(self) -> None:
        """Shut the driver down; safe to call twice and after a failed open."""
        cluster, self._cluster, self._session, self._prepared = self._cluster, None, None, {}
        if cluster is not None:
            await asyncio.to_thread(cluster.shutdown)

    # -- the asyncio bridge ----------------------------------------------------

    def _run(
        self, name: str, params: Sequence[Any], fetch_size: int | None = None, paging_state: bytes | None = None
    ) -> asyncio.Future[ResultSet]:
        """Execute a prepared statement; the future resolves on the event loop
        with one page of rows (``fetch_size`` rows, default the driver's;
        ``paging_state`` names the page after a previous one)."""
        if self._session is None or name not in self._prepared:
            raise StorageUnavailable(f"{self._where} is not open")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[ResultSet] = loop.create_future()
        bound = self._prepared[name].bind(params)
        if fetch_size is not None:
            bound.fetch_size = fetch_size
        response: ResponseFuture = self._session.execute_async(bound, paging_state=paging_state)

        def settle(rows: Any, error: BaseException | None) -> None:  # on the loop
            if done.done():  # cancelled by a timeout meanwhile
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(ResultSet(response, rows))

        def from_driver(rows: Any, error: BaseException | None) -> None:  # on the I/O thread
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(settle, rows, error)

        response.add_callbacks(lambda rows: from_driver(rows, None), lambda exc: from_driver(None, exc))
        return done

    async def _run_all(self, name: str, params: Sequence[Any]) -> Rows:
        """Execute a prepared statement and collect every page of its rows."""
        rows: list[dict[str, Any]] = []
        state = None
        while True:
            result = await self._run(name, params, fetch_size=_READ_PAGE, paging_state=state)
            rows.extend(result.current_rows)
            state = result.paging_state
            if state is None:
                return Rows(rows)

    # -- operations ------------------------------------------------------------

    async def append(self, batch: Sequence[NewMessage]) -> list[AppendResult]:
        """Store a batch; see the module notes for the ordering guarantee."""
        if not batch:
            return []
        async with self._guard("append"), self._lock:
            plan = BatchPlan(batch)
            now_us = time.time_ns() // 1000
            for stream in plan.streams():
                pending = plan.pending(stream)
                first = await self._reserve(stream, len(pending))
                claims = await asyncio.gather(
                    *(self._claim(batch[index], first + n, now_us) for n, index in enumerate(pending))
                )
                for n, (index, claim) in enumerate(zip(pending, claims, strict=True)):
                    msg = batch[index]
                    if claim.was_applied:
                        await self._write(msg, first + n, msg.timestamp_us, msg.expires_at_us, now_us)
                        plan.stored(index, first + n)
                    else:
                        held = claim.one()
                        await self._repair(msg, held, now_us)
                        plan.found(index, held["position"], held["timestamp_us"])
            return plan.results()

    async def _reserve(self, stream: str, count: int) -> int:
        """Take ``count`` fresh positions of the stream; return the first."""
        known = self._counters.get(stream)
        for _ in range(_MAX_CAS_ATTEMPTS):
            if known is None:
                result = await self._run("counter_create", (stream, count))
            else:
                result = await self._run("counter_cas", (known + count, stream, known))
            if result.was_applied:
                last = count if known is None else known + count
                if len(self._counters) >= _CACHED_COUNTERS:
                    self._counters.clear()
                self._counters[stream] = last
                return last - count + 1
            # lost the race: the answer carries the current value (None: no row yet)
            known = result.one().get("last_position")
        raise StorageUnavailable(f"{self._where}: stream {stream!r} counter is too contended")

    def _claim(self, msg: NewMessage, position: int, now_us: int) -> asyncio.Future[ResultSet]:
        ttl = ttl_seconds(msg.expires_at_us, now_us)
        params = (msg.stream_id, msg.uuid, position, msg.timestamp_us, msg.expires_at_us, ttl)
        return self._run("claim", params)

    async def _write(
        self, msg: NewMessage, position: int, timestamp_us: int, expires_at_us: int, now_us: int
    ) -> None:
        ttl = ttl_seconds(expires_at_us, now_us)
        params = (msg.stream_id, position, msg.uuid, msg.payload, timestamp_us, expires_at_us, ttl)
        await self._run("insert", params)

    async def _repair(self, msg: NewMessage, held: dict[str, Any], now_us: int) -> None:
        """The uuid is claimed; write its message if the claiming append died
        before writing it (the message is the same: same stream and uuid)."""
        if held["expires_at_us"] <= now_us:
            return
        found = await self._run("exists", (msg.stream_id, held["position"]))
        if not found.current_rows:
            await self._write(msg, held["position"], held["timestamp_us"], held["expires_at_us"], now_us)

    async def read_after(
        self, stream_id: str, after: int | None, now_us: int, limit: int
    ) -> list[StoredMessage]:
        """Alive messages after ``after``, oldest first (expired rows not yet
        dropped by their TTL are filtered out here)."""
        async with self._guard("read"):
            return await self._read_after(stream_id, after, now_us, limit)

    async def _read_after(self, stream_id: str, after: int | None, now_us: int, limit: int) -> list[StoredMessage]:
        out: list[StoredMessage] = []
        cursor = 0 if after is None else after
        # One range read of the partition per batch: LIMIT and fetch_size
        # equal, so the whole batch comes in one page.  Only rows expired but
        # not yet dropped by their TTL make it read on.
        while len(out) < limit:
            page = min(limit - len(out), _READ_PAGE)
            rows = (await self._run("read", (stream_id, cursor, page), fetch_size=page)).current_rows
            out.extend(stored_messages(stream_id, rows, now_us))
            if len(rows) < page:
                break
            cursor = rows[-1]["position"]
        return out

    async def read_latest(self, stream_id: str, now_us: int, limit: int) -> list[StoredMessage]:
        """The newest alive messages, oldest of them first (rows past their
        expiry that the TTL has not dropped yet are skipped)."""
        async with self._guard("read"):
            rows = (await self._run("read_latest", (stream_id, 2 * limit + 8))).current_rows
        return stored_messages(stream_id, rows, now_us)[:limit][::-1]

    async def delete_expired(self, now_us: int, limit: int) -> int:
        """Nothing to do: Cassandra drops expired rows itself (TTL). Returns 0."""
        if self._session is None:
            raise StorageUnavailable(f"{self._where} is not open")
        return 0

    async def ping(self) -> None:
        """Read ``system.local`` from a coordinator."""
        async with self._guard("ping"):
            await self._run("ping", ())

    # -- consumer groups and spilled buffers (see :mod:`.cassandra_groups`) -----------

    async def claim(
        self, stream_id: str, group: str, consumer: str, limit: int, lease_us: int, now_us: int, max_deliveries: int
    ) -> Claim:
        async with self._guard("claim"):
            return await self._groups.claim(stream_id, group, consumer, limit, lease_us, now_us, max_deliveries)

    async def ack(self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int) -> list[bool]:
        async with self._guard("ack"):
            return await self._groups.ack(stream_id, group, refs, now_us)

    async def nack(
        self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int, delay_us: int
    ) -> list[bool]:
        async with self._guard("nack"):
            return await self._groups.nack(stream_id, group, refs, now_us, delay_us)

    async def list_groups(self, stream_id: str, now_us: int) -> list[GroupInfo]:
        async with self._guard("list groups"):
            return await self._groups.list_groups(stream_id, now_us)

    async def delete_group(self, stream_id: str, group: str) -> bool:
        async with self._guard("delete group"):
            return await self._groups.delete_group(stream_id, group)

    async def delete_idle_groups(self, idle_before_us: int, limit: int) -> int:
        async with self._guard("delete idle groups"):
            return await self._groups.delete_idle_groups(idle_before_us, limit)

    async def spill(self, node: str, spill_id: int, streams: Sequence[SpilledStream]) -> int:
        async with self._guard("spill"):
            return await self._groups.spill(node, spill_id, streams)

    async def read_spilled(self, node: str) -> list[SpilledStream]:
        async with self._guard("read spilled"):
            return await self._groups.read_spilled(node)

    async def delete_spilled(self, node: str, through_spill_id: int) -> int:
        async with self._guard("delete spilled"):
            return await self._groups.delete_spilled(node, through_spill_id)
