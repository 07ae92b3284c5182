"""Redis (or Valkey, ElastiCache, MemoryDB) profile store: one round trip per request.

``FOLD`` runs server-side (EVALSHA, EVAL once when the server does not know the script yet):
it reads the cashier's, the store's and the global statistics and the cashier's window state
and, unless the transaction_id was seen within ``dedupe_ttl_s``, adds the transaction to all
three and folds it into the window - atomically, so concurrent requests for one cashier
(several workers, replicas, Lambda instances) never lose an update. Statistics are stored as
little-endian float64 strings and added in Lua (IEEE doubles), so the arithmetic is exactly
the in-process store's. The window fold is ``windows._step``/``_fold`` written again in Lua
(same operations in the same order; the one libm call, ``exp``, is the C library's on both
sides; ``tests/integration/test_store_parity.py`` checks the served features).

Every key shares one hash tag (``key_prefix``): in cluster mode the whole store is one slot.

The app awaits ``fold_async`` / ``fold_many_async`` (``redis_transport``: one pipelined
connection per event loop, the script loaded on connect), so one worker keeps scoring other
requests while Redis answers and a batch is one round trip; the blocking ``fold`` /
``fold_many`` and ``seed`` (redis-py) serve the CLI and tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator, Sequence

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from components.contracts import features as feats
from components.contracts import windows
from components.contracts.feature_columns import WINDOW_COUNTS, Win
from serving.store.base import FoldItem, StoreError, key_prefix
from serving.store.redis_transport import (
    ReplyError,
    Transport,
    TransportClosed,
    TransportTimeout,
    bulks,
    encode,
)

_WIDTH = feats.STATS_WIDTH
_WINDOW = feats.WINDOW_WIDTH

FOLD = """
local prefix, width, cashier, store, txn = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[5]
local fmt = '<' .. string.rep('d', width)
local wfmt = '<' .. string.rep('d', $WINDOW)
if store == '' then store = redis.call('HGET', prefix .. 'home', cashier) or '' end
local ck, sk, gk = prefix .. 'c:' .. cashier, prefix .. 's:' .. store, prefix .. 'g'
local wk = prefix .. 'w:' .. cashier
local c = redis.call('GET', ck)
local s = false
if store ~= '' then s = redis.call('GET', sk) end
local g = redis.call('GET', gk)
local w = redis.call('GET', wk)
local fresh = redis.call('SET', prefix .. 't:' .. txn, '1', 'NX', 'EX', tonumber(ARGV[6]))
if fresh then
  local v = {struct.unpack(fmt .. string.rep('d', 1 + $NC), ARGV[4])}
  local function add(old, key)
    local out = {}
    if old then
      local o = {struct.unpack(fmt, old)}
      for i = 1, width do out[i] = o[i] + v[i] end
    else
      for i = 1, width do out[i] = v[i] end
    end
    redis.call('SET', key, struct.pack(fmt, unpack(out)))
  end
  add(c, ck)
  if store ~= '' then add(s, sk) end
  add(g, gk)
  if ARGV[3] ~= '' then redis.call('HSET', prefix .. 'home', cashier, ARGV[3]) end
  -- windows._step and windows._fold (the cashier's shift and decayed last hour)
  local o = {}
  if w then o = {struct.unpack(wfmt, w)} else for i = 1, $WINDOW do o[i] = 0.0 end end
  local t = v[width + 1]
  local last = o[$LAST]
  local te = math.max(t, last)
  local gap = te - last
  local new_shift = o[$SHIFT] == 0.0 or gap > $SHIFT_GAP_S
  local d = math.exp(-gap / $DECAY_S)
  local out = {}
  out[$LAST] = te
  if new_shift then out[$START] = te else out[$START] = o[$START] end
  for k = 0, $NC - 1 do
    local x = v[width + 2 + k]
    local shift = o[$SHIFT + k]
    if new_shift then shift = 0.0 end
    out[$SHIFT + k] = shift + x
    out[$DECAY + k] = o[$DECAY + k] * d + x
  end
  redis.call('SET', wk, struct.pack(wfmt, unpack(out)))
end
return {c or '', s or '', g or '', w or '', fresh and 1 or 0}
"""
_CONSTANTS = {
    "WINDOW": _WINDOW,
    "NC": len(WINDOW_COUNTS),
    "LAST": Win.last_epoch_s + 1,  # Lua tables count from 1
    "START": Win.shift_start_s + 1,
    "SHIFT": Win.shift_txn + 1,
    "DECAY": Win.decay1h_txn + 1,
    "SHIFT_GAP_S": repr(windows.SHIFT_GAP_S),
    "DECAY_S": repr(windows.DECAY_S),
}
FOLD = re.sub(r"\$([A-Z_]+)", lambda m: str(_CONSTANTS[m.group(1)]), FOLD)


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """Redis client errors as ``StoreError`` with a fallback reason."""
    try:
        yield
    except (redis.TimeoutError, TransportTimeout) as exc:
        raise StoreError("timeout", f"no answer within the deadline ({exc})") from None
    except (redis.ConnectionError, OSError, TransportClosed) as exc:
        raise StoreError("unreachable", str(exc)) from None
    except redis.RedisError as exc:
        raise StoreError("error", str(exc)) from None


class RedisStore:
    """The profile store in Redis; every call bounded by ``deadline_s`` (no client retries)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "pos-risk",
        deadline_s: float = 0.05,
        dedupe_ttl_s: int = 86_400,
    ) -> None:
        self.prefix = key_prefix(namespace)
        self._url = url
        self._ttl = str(int(dedupe_ttl_s))
        self._width = str(_WIDTH)
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=deadline_s,
            socket_connect_timeout=deadline_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._fold = self.client.register_script(FOLD)
        self._zeros = bytes(8 * _WIDTH)
        self._no_window = bytes(8 * _WINDOW)
        sha = hashlib.sha1(FOLD.encode()).hexdigest()
        self._evalsha = (4, bulks(("EVALSHA", sha, "1", self.prefix)))
        self._eval = (4, bulks(("EVAL", FOLD, "1", self.prefix)))
        self._transport = Transport(
            url, deadline_s=deadline_s, on_connect=(("SCRIPT", "LOAD", FOLD),)
        )

    def _args(
        self, cashier_id: str, store_id: str | None, transaction_id: str, values: np.ndarray
    ) -> tuple:
        packed = np.ascontiguousarray(values, dtype="<f8").tobytes()
        return (self._width, cashier_id, store_id or "", packed, transaction_id, self._ttl)

    def _prior(self, reply: list) -> np.ndarray:
        c, s, g, w, _ = reply
        z = self._zeros
        parts = (c or z, s or z, g or z, w or self._no_window)
        return np.frombuffer(b"".join(parts), dtype="<f8").astype(np.float64)

    async def fold_async(
        self, cashier_id: str, store_id: str | None, transaction_id: str, values: np.ndarray
    ) -> np.ndarray:
        """``fold`` without blocking the event loop: other requests run while Redis answers
        (``redis_transport``: one pipelined connection per loop, made on first use)."""
        args = self._args(cashier_id, store_id, transaction_id, values)
        with _store_errors():
            reply = await self._transport.call(encode(args, self._evalsha))
            if isinstance(reply, ReplyError):
                reply = await self._noscript(reply, args)
        return self._prior(reply)

    async def fold_many_async(self, items: Sequence[FoldItem]) -> list[np.ndarray]:
        """``fold`` of every item, in order, in ONE round trip (one write, one EVALSHA each:
        the server runs them in order, so dedupe and priors are those of one-by-one folds)."""
        if not items:
            return []
        args = [self._args(*item) for item in items]
        with _store_errors():
            replies = await self._transport.call_many([encode(a, self._evalsha) for a in args])
            for i, reply in enumerate(replies):
                if isinstance(reply, ReplyError):
                    # Only after a SCRIPT FLUSH since this connection loaded the script:
                    # the refused items run again as EVAL, in order.
                    replies[i] = await self._noscript(reply, args[i])
        return [self._prior(reply) for reply in replies]

    async def _noscript(self, reply: ReplyError, args: tuple) -> list:
        """The EVAL of a refused EVALSHA when the server lost the script, else StoreError."""
        if not str(reply).startswith("NOSCRIPT"):
            raise StoreError("error", str(reply))
        again = await self._transport.call(encode(args, self._eval))
        if isinstance(again, ReplyError):
            raise StoreError("error", str(again))
        return again

    def fold_many(self, items: Sequence[FoldItem]) -> list[np.ndarray]:
        """Blocking ``fold_many_async`` (one pipelined round trip through redis-py)."""
        if not items:
            return []
        with _store_errors():
            pipe = self.client.pipeline(transaction=False)
            for item in items:
                self._fold(keys=(self.prefix,), args=self._args(*item), client=pipe)
            replies = pipe.execute()
        return [self._prior(reply) for reply in replies]

    def fold(
        self, cashier_id: str, store_id: str | None, transaction_id: str, values: np.ndarray
    ) -> np.ndarray:
        with _store_errors():
            reply = self._fold(
                keys=(self.prefix,), args=self._args(cashier_id, store_id, transaction_id, values)
            )
        return self._prior(reply)

    def seed(self, index: feats.ProfileIndex, bundle_sha256: str) -> int:
        """Write every profile key that does not exist yet (SET NX), then the seed marker.

        Idempotent and safe against live traffic: existing (possibly live) keys are never
        overwritten; the marker (the bundle's sha256) is written last, so an interrupted
        seed is simply repeated.
        """
        p = self.prefix
        rows = [(f"{p}c:{k}", v) for k, v in index.cashiers.items()]
        rows += [(f"{p}s:{k}", v) for k, v in index.stores.items()]
        rows.append((f"{p}g", index.global_stats))
        rows += [(f"{p}w:{k}", v) for k, v in index.windows.items()]
        # Seeding is bulk work, not a request: its own client with a generous timeout.
        client = redis.Redis.from_url(self._url, socket_timeout=10, socket_connect_timeout=2)
        try:
            if client.exists(f"{p}seeded"):
                return 0
            written = 0
            for lo in range(0, len(rows), 1000):
                pipe = client.pipeline(transaction=False)
                for key, stats in rows[lo : lo + 1000]:
                    pipe.set(key, np.asarray(stats, dtype="<f8").tobytes(), nx=True)
                written += sum(1 for ok in pipe.execute() if ok)
            homes = list(index.home_store.items())
            for lo in range(0, len(homes), 1000):
                pipe = client.pipeline(transaction=False)
                for cashier, home in homes[lo : lo + 1000]:
                    pipe.hsetnx(f"{p}home", cashier, home)
                pipe.execute()
            client.set(f"{p}seeded", bundle_sha256, nx=True)
        except redis.TimeoutError as exc:
            raise StoreError("timeout", f"seeding: {exc}") from None
        except (redis.RedisError, OSError) as exc:
            raise StoreError("unreachable", f"seeding: {exc}") from None
        finally:
            client.close()
        return written

    def close(self) -> None:
        self._transport.close()
        self.client.close()
