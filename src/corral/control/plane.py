"""The control plane of one process: database, event bus, nodes, jobs, health checks, services.

Services are async at their edge and do their database work in threads (the database drivers
block): `read(fn)` runs `fn(session)` in a transaction in a worker thread; `write(fn)` hands it
to the writer (corral.db.writer), which commits it together with the writes queued alongside.
A write's result comes after the commit, and its events are published then.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import anyio
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from corral.context import Context
from corral.control.allocations import AllocationService
from corral.control.eventlog import EventLog, record
from corral.control.events import EventBus
from corral.control.health import HealthMonitor
from corral.control.hosts import HostService, host_event
from corral.control.images import ImageService
from corral.control.jobs import JobRunner, JobService
from corral.control.liveness import Liveness
from corral.control.metrics import PlaneMetrics
from corral.control.networks import NetworkService
from corral.control.nodes import NodeFactory, NodeRegistry, default_factory
from corral.control.relay import EventRelay
from corral.control.settings import IN_PROCESS, LOCAL_HOST, Settings
from corral.control.storage import BootSourceService, StorageObjectService, StoragePoolService
from corral.control.tokens import TokenService
from corral.control.vms import VmService
from corral.db.engine import Database
from corral.db.models import Host
from corral.db.repositories import HostRepository
from corral.db.serve_lock import ServeLock
from corral.db.writer import BatchWriter
from corral.errors import Conflict, CorralError, InvalidInput
from corral.layout import Home

T = TypeVar("T")
log = logging.getLogger(__name__)

_UNIQUE = re.compile(r'"uq_(\w+?)_(name|key)"|UNIQUE constraint failed: (\w+)\.(\w+)')


class DatabaseUnavailable(CorralError):
    """The database did not answer, or refused for a reason that is not the request's fault."""

    http_status = 503


DB_THREADS = 8  # worker threads for database work, and connections in the pool


class ControlPlane:
    def __init__(self, settings: Settings, *, node_factory: NodeFactory | None = None) -> None:
        self.settings = settings
        self.process_id = uuid.uuid4()  # this process, among those sharing the database
        self.db = Database(settings.database_url, pool_size=DB_THREADS)
        self.serve_lock = ServeLock(settings.database_url)
        self.bus = EventBus()
        self.db.after_commit = self.bus.publish
        # Several processes may share a PostgreSQL database: each streams its siblings' events.
        self.relay = (
            EventRelay(self.db.url, self.bus.publish, lambda: self.bus.subscribers > 0)
            if self.db.is_postgresql
            else None
        )
        # Each write transaction stores its events before it commits (and, on PostgreSQL,
        # tells the sibling processes).
        self.db.before_commit = self._before_commit
        self.events = EventLog(self)
        local = _local_home(settings) if settings.local_node else None
        self.metrics = PlaneMetrics(
            self.db, lambda: self.bus.subscribers, lambda: self.runner.running, local
        )
        self.nodes = NodeRegistry(node_factory or default_factory(settings))
        self.runner = JobRunner(self)
        self.jobs = JobService(self)
        self.hosts = HostService(self)
        self.images = ImageService(self)
        self.pools = StoragePoolService(self)
        self.objects = StorageObjectService(self)
        self.boot_sources = BootSourceService(self)
        self.vms = VmService(self)
        self.networks = NetworkService(self)
        self.tokens = TokenService(self.db)
        self.allocations = AllocationService(self)
        self.health = HealthMonitor(self)
        self.liveness = Liveness(self) if self.db.is_postgresql else None
        # Reads run in worker threads, no more at once than the pool has connections (more
        # would only queue for the GIL and for connections); every write goes to the writer,
        # whose threads commit what has queued together (see corral.db.writer).
        self._threads = anyio.CapacityLimiter(DB_THREADS)
        self._writer: BatchWriter | None = None

    def _before_commit(self, session: Session, events: list[Any]) -> None:
        record(session, events)
        if self.relay is not None:
            self.relay.send(session, events)

    # --- transactions in worker threads ---------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(
            functools.partial(self._read, fn, *args), limiter=self._threads
        )

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        if self._writer is None:
            self._writer = BatchWriter(self.db, _database_errors, self._write)
        return await asyncio.wrap_future(self._writer.submit(fn, *args))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking call that uses the database (e.g. a token check), in a worker thread."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._threads)

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        with _database_errors(), self.db.read() as session:
            return fn(session, *args)

    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        for attempt in range(1, RETRIES + 1):
            try:
                with _database_errors(), self.db.write() as session:
                    return fn(session, *args)
            except _Retry as exc:
                # PostgreSQL gave up on this transaction (a deadlock, a serialization
                # failure): nothing of it was kept, so it can run again.
                log.info("retrying a transaction (%d): %s", attempt, exc.__cause__)
                if attempt == RETRIES:
                    raise DatabaseUnavailable(f"database error: {exc.__cause__}") from exc
                time.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    # --- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        # On SQLite, one server per file (a second would fail the first's running jobs below).
        await anyio.to_thread.run_sync(self.serve_lock.acquire)
        try:
            await self._start()
        except BaseException:
            self.serve_lock.release()
            raise

    async def _start(self) -> None:
        from corral.db.migrate import upgrade

        self.bus.bind(asyncio.get_running_loop())
        if self.relay is not None:
            self.relay.start()
        if self.settings.migrate:
            await anyio.to_thread.run_sync(upgrade, self.db)
        if self.db.is_sqlite:
            # One SQLite file has one server: what it left unfinished will never finish.
            reason = "the control plane restarted before the job finished"
            count = await self.write(self.jobs.fail_unfinished, reason)
            if count:
                log.warning("marked %d unfinished jobs of a previous run failed", count)
        if self.liveness is not None:
            await self.liveness.start()
        if self.settings.local_node:
            await self._register_local_host()
        self.health.start()
        self.events.start()

    async def stop(self) -> None:
        await self.health.stop()
        await self.events.stop()
        await self.runner.close()
        if self.liveness is not None:
            await self.liveness.stop()
        await self.nodes.close()
        if self.relay is not None:
            await anyio.to_thread.run_sync(self.relay.stop)
        if self._writer is not None:
            await anyio.to_thread.run_sync(self._writer.close)
        await anyio.to_thread.run_sync(self.db.dispose)
        self.serve_lock.release()

    async def _register_local_host(self) -> None:
        """Embedded mode: this machine is host `local`, served in-process; (re)init it."""

        def ensure(session: Session) -> Host:
            hosts = HostRepository(session)
            host = hosts.by_name(LOCAL_HOST)
            if host is None:
                host = hosts.add(Host(name=LOCAL_HOST, address=IN_PROCESS, port=0))
                host_event(session, host, "created")
            return host

        host = await self.write(ensure)
        if host.status not in ("maintenance",) and host.address == IN_PROCESS:
            try:
                await self.hosts.init(host.id)
            except CorralError as exc:
                log.warning("the local host could not be initialised: %s", exc.message)


def _local_home(settings: Settings) -> Callable[[], Home]:
    """The in-process node's state directory, worked out when first asked for."""

    @functools.cache
    def home() -> Home:
        return (Context(settings.config) if settings.config else Context()).home

    return home


RETRIES = 5
_RETRY_STATES = {"40P01", "40001"}  # deadlock detected, serialization failure


class _Retry(Exception):
    pass


class _database_errors:
    """Integrity errors (a name taken by a concurrent request) are conflicts; a database that
    is away is a failure with a message, not a traceback."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if isinstance(exc, IntegrityError):
            match = _UNIQUE.search(str(exc.orig))
            if match:
                table, column = match.group(1) or match.group(3), match.group(2) or match.group(4)
                raise Conflict(f"that {column} is already taken ({table})") from exc
            raise Conflict(f"the change conflicts with the stored data: {exc.orig}") from exc
        if isinstance(exc, DataError):  # e.g. a NUL byte, which PostgreSQL text cannot hold
            message = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise InvalidInput(f"a value the database cannot store: {message}") from exc
        if isinstance(exc, OperationalError):
            if getattr(exc.orig, "sqlstate", None) in _RETRY_STATES:
                raise _Retry from exc
            message = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if "timeout" in message.lower() or "locked" in message.lower():
                raise DatabaseUnavailable(f"the database is busy: {message}") from exc
            raise DatabaseUnavailable(f"database error: {message}") from exc
        return False
