"""datagen: write synthetic labelled POS transactions as a Parquet dataset folder.

Days are generated one at a time (each from its own seeded random stream) and written in
``--chunk-rows`` pieces through ``storage.DatasetWriter``, so memory is bounded by one day
plus one chunk, and the data does not depend on the chunk size. Nothing is published unless
every chunk was written.

Example:
    python -m components.datagen --out-transactions var/transactions --rows 200000 --seed 42
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import time

import pyarrow.compute as pc

from components.contracts import cli, storage
from components.contracts.schemas import InputError
from components.datagen.logic import DatagenParams, generate, parse_date, rechunk, summarize
from components.datagen.spec import SPEC

log = logging.getLogger(SPEC.name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return cli.build_parser(SPEC).parse_args(argv)


def params_from_args(args: argparse.Namespace) -> DatagenParams:
    """Validated generation parameters (``ValueError`` naming the bad flag)."""
    params = DatagenParams(
        **{**cli.dataclass_kwargs(args, DatagenParams), "start_date": parse_date(args.start_date)}
    )
    params.validate()
    if args.chunk_rows <= 0:
        raise InputError(f"--chunk-rows must be positive, got {args.chunk_rows}")
    return params


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = params_from_args(args)  # before any output exists
    started = time.perf_counter()
    counts: collections.Counter[str] = collections.Counter()
    with storage.DatasetWriter(args.out_transactions) as writer:
        for chunk in rechunk(generate(params), args.chunk_rows):
            writer.write(chunk)
            vc = pc.value_counts(chunk.column("fraud_type"))
            counts.update(
                dict(
                    zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)
                )
            )
            log.info("wrote %d / %d rows", writer.rows, params.rows)
    elapsed = time.perf_counter() - started
    lines = summarize(counts, writer.rows)
    print(f"datagen: {args.out_transactions}  ({elapsed:.1f}s)")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(cli.run(SPEC.name, main))
