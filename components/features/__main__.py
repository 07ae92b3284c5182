"""features: build the point-in-time feature table and the cashier profiles.

Reads the historic lake one date partition at a time, in time order, carrying running
per-cashier / per-store / global statistics across days, so memory is bounded by one day
of data however long the history is. Writes the feature table (one Parquet file) and the
final profile table that serving looks up.

Example:
    python -m components.features --in-historic var/lake --in-time-splits var/splits.json \\
        --out-features var/features.parquet --out-profiles var/profiles.parquet
"""

from __future__ import annotations

import argparse
import logging
import sys

import pyarrow.dataset as ds

from components.contracts import cli, storage
from components.contracts import features as F
from components.contracts.layout import (
    FEATURE_SUBSETS,
    HISTORIC_SUBSETS,
    SUBSET_COLUMN,
    TimeBoundaries,
)
from components.contracts.schemas import (
    GENERATED_TRANSACTION,
    DuplicateIds,
    InputError,
    raise_on_duplicates,
)
from components.features.logic import FEATURE_TABLE_SCHEMA, feature_chunk
from components.features.spec import SPEC

log = logging.getLogger(SPEC.name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return cli.build_parser(SPEC).parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    splits = TimeBoundaries.from_json(
        storage.open_output(args.in_time_splits).read_json(), source=args.in_time_splits
    )
    dates = storage.list_partitions(args.in_historic, "date")
    if not dates:
        raise InputError(f"{args.in_historic}: no date=YYYY-MM-DD partitions found")
    F.warm_up()
    state = F.ProfileState()
    counts = dict.fromkeys(FEATURE_SUBSETS, 0)
    ids = DuplicateIds()
    with (
        storage.publish(SPEC.name) as pub,  # features and profiles: one commit, or none
        storage.ParquetStreamWriter(pub.file(args.out_features), FEATURE_TABLE_SCHEMA) as writer,
    ):
        for date in dates:
            source = f"{args.in_historic} (date={date})"
            table = storage.read_table(
                args.in_historic, GENERATED_TRANSACTION, filter=ds.field("date") == date
            )
            ids.add(table.column("transaction_id"))
            try:
                chunk = feature_chunk(table.to_pandas(), state, splits)
            except InputError as exc:
                raise InputError(f"{source}: {exc}") from exc
            writer.write(chunk)
            for subset, n in zip(*_value_counts(chunk.column(SUBSET_COLUMN)), strict=True):
                counts[subset] += n
            log.info("%s: %d rows", date, chunk.num_rows)
        raise_on_duplicates(ids, source=args.in_historic, column="transaction_id")
        empty = [subset for subset in HISTORIC_SUBSETS if counts[subset] == 0]
        if empty:  # raised inside the block: nothing is published
            raise InputError(
                f"{args.in_time_splits}: the {empty[0]} subset has no rows of "
                f"{args.in_historic} (column 'timestamp' outside its window)"
            )
        profiles = state.to_table()
        storage.write_table(profiles, pub.file(args.out_profiles))
    n_cashiers = sum(1 for level in profiles.column("level").to_pylist() if level == "cashier")
    print(
        f"features: {writer.rows:,} rows x {len(F.FEATURE_NAMES)} features over {len(dates)} days "
        f"(train {counts['train']:,} / valid {counts['valid']:,} / test {counts['test']:,}); "
        f"profiles for {n_cashiers} cashiers"
    )


def _value_counts(column):
    vc = column.value_counts()
    return vc.field("values").to_pylist(), vc.field("counts").to_pylist()


if __name__ == "__main__":
    sys.exit(cli.run(SPEC.name, main))
