"""The per-user limits counted in Redis (the broker's, on the compose stack), once for every
API process, so that four processes allow what one would; in this process's memory while Redis
does not answer: a read or a submission never fails for want of its count."""

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as ConnectionLost
from redis.exceptions import RedisError

from api.limits import Counts, Full, LocalCounts, Release
from core.config import Settings

log = logging.getLogger(__name__)

PREFIX = "convlab:limits:"
LEASE_S = 30.0
"""How long a slot outlives its holder's last renewal (a killed process's slots free then)."""
RETRY_S = 1.0
"""How long counts stay in memory after Redis failed to answer, before it is asked again."""
TIMEOUT_S = 1.0
"""The longest a count waits for Redis."""

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""
_WINDOW = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.ceil(tonumber(oldest[2]) + 60 - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('EXPIRE', KEYS[1], 61)
return 0
"""
)
"""KEYS: the requests of the last minute; ARGV: the cap, a new request's id. 0 when counted,
else the seconds until one is allowed."""
_TAKE = (
    _NOW
    + """
local lease = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local held = redis.call('ZCARD', key)
  if held >= tonumber(ARGV[i + 2]) then
    return {i - 1, held}
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[1])
  redis.call('EXPIRE', key, math.ceil(lease) + 1)
end
return {-1, 0}
"""
)
"""KEYS: the slots' holders, scored by their lease's end; ARGV: the holder, the lease, each
key's cap. {-1, 0} when held, else the first full key's index and count."""
_RENEW = (
    _NOW
    + """
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + tonumber(ARGV[2]), ARGV[1])
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[2])) + 1)
end
return 0
"""
)
_RELEASE = """
for _, key in ipairs(KEYS) do
  redis.call('ZREM', key, ARGV[1])
end
return 0
"""


class SharedCounts:
    """``Counts`` in Redis: per user and kind of request, a sorted set of the last minute's
    requests by Redis' clock (a sliding window); per count of slots, a sorted set of holders
    scored by the end of their lease, renewed while held. Each check is one script, atomic
    across processes. While Redis does not answer, counts in ``local`` (one warning an
    outage), and asks Redis again every ``RETRY_S``."""

    def __init__(self, url: str, lease_s: float = LEASE_S) -> None:
        self.url = url
        self.redis = _connect(url)
        self.loop: asyncio.AbstractEventLoop | None = None
        """The event loop ``redis``'s connections belong to (None: it has none yet)."""
        self.lease_s = lease_s
        self.local = LocalCounts()
        self.window = self.redis.register_script(_WINDOW)
        self.taking = self.redis.register_script(_TAKE)
        self.renewing = self.redis.register_script(_RENEW)
        self.releasing = self.redis.register_script(_RELEASE)
        self.down = False
        self.retry_at = 0.0

    async def count_request(self, name: str, per_minute: int) -> int:
        keys = [f"{PREFIX}rate:{name}"]
        answer = await self._call(self.window, keys, [per_minute, uuid.uuid4().hex])
        if answer is None:
            return await self.local.count_request(name, per_minute)
        return int(answer)

    async def take(self, scopes: Sequence[tuple[str, int]]) -> Release:
        keys = [f"{PREFIX}slots:{name}" for name, _ in scopes]
        holder = uuid.uuid4().hex
        caps = [cap for _, cap in scopes]
        answer = await self._call(self.taking, keys, [holder, self.lease_s, *caps])
        if answer is None:
            return await self.local.take(scopes)
        index, held = (int(value) for value in answer)
        if index >= 0:
            raise Full(index, held)
        renewal = asyncio.create_task(self._renew(keys, holder))

        async def release() -> None:
            renewal.cancel()
            await self._call(self.releasing, keys, [holder])

        return release

    async def close(self) -> None:
        await self.redis.aclose()

    async def _renew(self, keys: list[str], holder: str) -> None:
        """Renew ``holder``'s lease three times a lease until cancelled (given back)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            await self._call(self.renewing, keys, [holder, self.lease_s])

    async def _call(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """The script's answer, or None while Redis does not answer."""
        if time.monotonic() < self.retry_at:
            return None
        try:
            answer = await script(keys=keys, args=args, client=self._client())
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        if self.down:
            self.down = False
            log.warning("Redis answers again; the per-user limits are counted there again")
        return answer

    def _client(self) -> Redis:
        """A client for the running event loop: a connection serves the loop that opened it
        alone (uvicorn runs one; an app under a test client may see several in turn)."""
        loop = asyncio.get_running_loop()
        if self.loop not in (None, loop):
            self.redis = _connect(self.url)
        self.loop = loop
        return self.redis

    def _failed(self, exc: Exception) -> None:
        """Count in memory for ``RETRY_S``; a warning when an outage begins."""
        self.retry_at = time.monotonic() + RETRY_S
        if not self.down:
            self.down = True
            log.warning(
                "Redis does not answer (%s); this process counts the per-user limits on its "
                "own until it does",
                exc,
            )


def _connect(url: str) -> Redis:
    """A client that gives up within ``TIMEOUT_S`` and retries once at once when a
    connection was lost (a restarted Redis)."""
    return Redis.from_url(
        url,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
        retry=Retry(NoBackoff(), 1, (ConnectionLost,)),
    )


def counts_for(settings: Settings) -> Counts:
    """Redis' counts when the broker is Redis (shared by the API's processes), else this
    process's memory (the embedded default, where the API commonly runs one process)."""
    if settings.broker_is_redis:
        return SharedCounts(settings.resolved_broker_url)
    return LocalCounts()
