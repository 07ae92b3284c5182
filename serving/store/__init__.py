"""The online profile store: live per-cashier, per-store and global running statistics.

Training computes every profile feature point-in-time (``features.ProfileState``): a
transaction sees the statistics of everything before it. Serving does the same, one request
at a time: ``LiveProfiles.prior`` reads the cashier's, its store's and the global statistics
(the prior the features kernel needs), and folds the transaction in - in ONE atomic step, so
request N+1 sees request N exactly as the batch features stage would.

Rules (the batch side applies the same ones):

* **Seeding.** The bundle's profile table (the features stage's final ``ProfileState``) is the
  starting state: the in-process store copies it at start; Redis is seeded by
  ``python -m serving.store seed`` (``make seed-store``) or by the app on start. Seeding is
  idempotent: it only writes keys that do not exist, so it never overwrites live statistics.
  Keys carry ``FEATURE_VERSION``; a feature change starts a new key space.
* **Order.** Transactions are folded in arrival order. The batch stage folds in (timestamp,
  transaction_id) order, which is the arrival order of a POS stream in time order (the parity
  test replays one). Statistics are sums, so the stored state equals the batch state whatever
  the order; only a late transaction's own prior differs (it sees what arrived before it).
  The cashier's shift and last-hour window is not a sum: a transaction older than the
  cashier's last one is taken at the last one's time (``components.contracts.windows``), in
  batch, in process and in Redis alike.
* **Retries.** A transaction_id already folded is scored again (against the current state) but
  never folded twice: a Redis key per id with a TTL (``DEDUPE_TTL_S``) / an LRU of the last
  ``DEDUPE_SIZE`` ids in process.
* **Rejected requests.** A request that fails validation (4xx) never reaches the store.
* **Degradation.** When the store is unreachable or slower than ``STORE_DEADLINE_MS``, the
  request is scored with the bundle's frozen profile (``profile_source: "frozen"`` in the
  response, ``pos_risk_profile_fallbacks_total`` in /metrics), never a 5xx; the store is then
  left alone for ``STORE_RETRY_S`` seconds so a dead store costs one deadline, not one per
  request.
"""

from __future__ import annotations

from serving.store.base import (
    FROZEN,
    LIVE,
    LiveProfiles,
    ProfileStore,
    StoreError,
    build_store,
    key_prefix,
)
from serving.store.memory import InProcessStore

__all__ = [
    "FROZEN",
    "LIVE",
    "InProcessStore",
    "LiveProfiles",
    "ProfileStore",
    "StoreError",
    "build_store",
    "key_prefix",
]
