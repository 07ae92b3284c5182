"""split: cut labelled transactions by time into a historic lake and a held-out live stream.

Two streaming passes over the input, so memory is bounded by one read buffer plus the
live window (a few days): the first reads only the timestamps to fix the boundaries, the
second validates every batch against ``GENERATED_TRANSACTION`` (labels and cohort
labels; data without the cohort columns reads them as nulls) and routes its rows to the
Hive-partitioned historic lake or to the live window. The four outputs are published in
one commit (``storage.publish``): all of them or none.

Example:
    python -m components.split --in-transactions var/transactions --out-historic var/lake \\
        --out-live-stream var/live.jsonl --out-live-labels var/live_labels.parquet \\
        --out-time-splits var/time_splits.json --live-days 3 --valid-days 4 --test-days 5 \\
        --holdout-cashier-fraction 0.3
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.contracts import cli, storage
from components.contracts.layout import (
    DATE_COLUMN,
    SUBSETS,
    TimeBoundaries,
    holdout_cashiers,
    subset_codes,
    time_boundaries,
)
from components.contracts.schemas import (
    GENERATED_TRANSACTION,
    LABELLED_TRANSACTION,
    DuplicateIds,
    InputError,
    raise_on_duplicates,
    validate_table,
)
from components.split.logic import (
    live_labels,
    live_stream,
    split_by_time,
    with_date_partition,
)
from components.split.spec import SPEC

log = logging.getLogger(SPEC.name)

BUFFER_ROWS = 1_000_000
"""Historic rows gathered before one write (one Parquet file per date per write)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return cli.build_parser(SPEC).parse_args(argv)


def read_boundaries(uri: str, args: argparse.Namespace) -> TimeBoundaries:
    """First pass: the time range and the held-out cashiers, from three columns."""
    cols = pa.schema(
        [LABELLED_TRANSACTION.field(n) for n in ("timestamp", "cashier_id", "is_fraud")]
    )
    table = storage.read_table(uri, cols)
    bounds = pc.min_max(table.column("timestamp")).as_py()
    try:
        b = time_boundaries(
            bounds["min"], bounds["max"],
            live_days=args.live_days, valid_days=args.valid_days, test_days=args.test_days,
        )  # fmt: skip
    except InputError as exc:
        raise InputError(f"{uri}: column 'timestamp': {exc}") from exc
    held = holdout_cashiers(
        table.column("cashier_id").to_numpy(zero_copy_only=False),
        table.column("is_fraud").to_numpy(zero_copy_only=False),
        fraction=args.holdout_cashier_fraction,
        seed=args.holdout_seed,
    )
    return b.with_holdout(held)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for name in ("live_days", "valid_days", "test_days"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} must be at least 1, got {getattr(args, name)}")
    if not 0 <= args.holdout_cashier_fraction < 1:
        raise InputError(
            f"--holdout-cashier-fraction must be in [0, 1), got {args.holdout_cashier_fraction}"
        )
    started = time.perf_counter()
    src = args.in_transactions
    b = read_boundaries(src, args)
    log.info("boundaries %s", b.to_json())

    counts: collections.Counter[str] = collections.Counter()
    live_parts: list[pa.Table] = []
    pending: list[pa.Table] = []
    pending_rows = 0
    ids = DuplicateIds()
    with (
        storage.publish(SPEC.name) as pub,  # all four outputs in one commit, or none
        storage.DatasetWriter(
            args.out_historic, partition_cols=[DATE_COLUMN], publication=pub
        ) as writer,
    ):
        for batch in storage.iter_dataset_batches(src):
            table = validate_table(
                pa.Table.from_batches([batch]), GENERATED_TRANSACTION, source=src
            )
            ids.add(table.column("transaction_id"))
            codes = subset_codes(table.column("timestamp"), b)
            n = np.bincount(codes, minlength=len(SUBSETS))
            counts.update(dict(zip(SUBSETS, n.tolist(), strict=True)))
            historic, live = split_by_time(table, b)
            if live.num_rows:
                live_parts.append(live)
            if historic.num_rows:
                pending.append(historic)
                pending_rows += historic.num_rows
            if pending_rows >= BUFFER_ROWS:
                writer.write(with_date_partition(pa.concat_tables(pending)))
                pending, pending_rows = [], 0
        if pending:
            writer.write(with_date_partition(pa.concat_tables(pending)))
        raise_on_duplicates(ids, source=src, column="transaction_id")
        empty = [s for s in SUBSETS if not counts[s]]
        bounds = {k: v for k, v in b.to_json().items() if k != "holdout_cashiers"}
        if empty:
            raise InputError(
                f"{src}: no transactions in the {empty[0]} window {bounds} (gap in the data?)"
            )
        live = pa.concat_tables(live_parts)
        storage.write_jsonl(live_stream(live), pub.file(args.out_live_stream))
        storage.write_table(live_labels(live), pub.file(args.out_live_labels))
        storage.write_json(b.to_json(), pub.file(args.out_time_splits))
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    print(f"split: {total:,} rows in {elapsed:.1f}s")
    for s in SUBSETS:
        print(f"  {s:<5} {counts[s]:>11,}  ({counts[s] / total:.1%})")
    print(f"  boundaries {bounds}")
    print(f"  held-out cashiers: {len(b.holdout_cashiers)}")


if __name__ == "__main__":
    sys.exit(cli.run(SPEC.name, main))
