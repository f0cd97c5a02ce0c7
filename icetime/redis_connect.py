"""Connecting to Redis, one server or a Cluster, and logging its outages once.

Every service's client comes from :func:`connect`: a command that fails on the
connection raises at once (the client never retries by itself: the bus's PUBLISH
script must not run twice), and each service retries in its own loop, logged by an
:class:`Outage` (docs/delivery.md). Imported from :mod:`icetime.bus` by the services.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    CrossSlotTransactionError,
    InvalidPipelineStack,
    RedisClusterException,
)

#: Connections per process. A burst of requests (a thousand phones subscribing at
#: once) waits for a free connection instead of failing.
POOL_SIZE = 64


#: Seconds to open a connection, and to wait for any reply. The longest blocking read
#: the services make is 1 s (the fan-out's XREAD), so 5 s means a server that went
#: away without closing its sockets (a host or network failure) is noticed in 5 s
#: instead of hanging a service for as long as the kernel keeps the connection.
CONNECT_TIMEOUT_S = 2.0
REPLY_TIMEOUT_S = 5.0
#: A pooled connection idle longer than this is PINGed before it is used again.
HEALTH_CHECK_S = 10


#: The URL schemes that name a node of a Redis Cluster (the rest of the URL as for
#: ``redis://`` and ``rediss://``).
CLUSTER_SCHEMES = {"redis+cluster://": "redis://", "rediss+cluster://": "rediss://"}


class ClusterUnavailable(RedisConnectionError):
    """The cluster client could not reach a node serving a key's slot (no node
    answers, or no master serves the slot for now, as in a failover): an outage, a
    RedisError like any other, which the services' retry loops handle."""


class _Cluster(RedisCluster):
    """redis-py's cluster client, whose "cannot reach the cluster" errors are
    RedisErrors (:class:`ClusterUnavailable`) like a single server's: redis-py raises
    them as ``RedisClusterException``, which is not one."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except (CrossSlotTransactionError, InvalidPipelineStack):
            raise  # icetime's own mistake, not an outage
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    def pipeline(self, transaction: Any | None = None,
                 shard_hint: Any | None = None) -> ClusterPipeline:
        """A pipeline whose "cannot reach the cluster" errors are RedisErrors too."""
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refuses it, as redis-py does
        # redis-py declares _event_dispatcher abstract on its base and sets it in __init__.
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]


class _ClusterPipeline(ClusterPipeline):
    """redis-py's cluster pipeline, raising :class:`ClusterUnavailable` where it raises
    ``RedisClusterException`` for an unreachable cluster: its execute() does not go
    through :meth:`_Cluster.execute_command`, and the services' retry loops catch
    RedisError (without this, the scoring pool's announcement would kill the worker)."""

    async def execute(self, raise_on_error: bool = True,
                      allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except (CrossSlotTransactionError, InvalidPipelineStack):
            raise
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc


def connect(url: str) -> aioredis.Redis:
    """An asyncio client for ``redis://``, ``rediss://`` or ``unix://`` URLs, or for a
    Redis Cluster through any of its nodes (``redis+cluster://host:port``,
    ``rediss+cluster://``): redis-py's ``RedisCluster``, which finds the other nodes,
    sends each command to the master of its keys' slot and follows a failover.

    A command that fails on the connection (Redis down, restarted, unreachable, a
    cluster master gone) raises ``redis.exceptions.ConnectionError`` or ``TimeoutError``
    (both RedisError) at once: the client never retries by itself, because the PUBLISH
    script must not run twice; each service has its own retry loop (:class:`Outage`
    logs it). Broken pooled connections are replaced when next taken from the pool; a
    cluster client learns the new layout (which node now serves a slot) on the next
    command after such an error."""
    options: dict[str, Any] = {
        "decode_responses": False, "health_check_interval": HEALTH_CHECK_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": REPLY_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0)}
    for scheme, plain in CLUSTER_SCHEMES.items():
        if url.startswith(scheme):
            # The cluster client speaks every command the services use with the single
            # server's signatures; typed as one so the services need no second path.
            cluster = _Cluster.from_url(plain + url[len(scheme):],
                                            max_connections=POOL_SIZE, **options)
            return cast(aioredis.Redis, cluster)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=20, **options)
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes both


class Outage:
    """The log of a service's Redis outages: one WARNING when Redis first fails, one
    INFO "recovered" (with how long it was away) at the first success after that, and
    nothing in between, however often the service retries. No traceback: a Redis that
    is away is an expected condition, and its error message says all there is."""

    def __init__(self, logger: logging.Logger, what: str,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.log = logger
        self.what = what
        #: time.monotonic() when the current outage began; None while Redis answers.
        self.since: float | None = None
        #: Called with True when an outage begins and False when it ends (a broadcast
        #: node tells its clients the data is stale).
        self.on_change = on_change

    def failed(self, exc: BaseException, doing: str = "") -> None:
        """A Redis call failed with ``exc`` (while ``doing`` something, for the log)."""
        if self.since is None:
            self.since = time.monotonic()
            if self.on_change is not None:
                self.on_change(True)
            self.log.warning("%s: Redis unavailable%s (%s); retrying until it is back",
                             self.what, f" while {doing}" if doing else "", exc)
        else:
            self.log.debug("%s: Redis still unavailable: %s", self.what, exc)

    def ok(self) -> None:
        """A Redis call succeeded."""
        if self.since is not None:
            self.log.info("%s: Redis recovered after %.1f s", self.what,
                          time.monotonic() - self.since)
            self.since = None
            if self.on_change is not None:
                self.on_change(False)
