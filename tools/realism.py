"""Realism report of the generated world (``components.datagen.realism``): table + JSON.

Per fraud type the best single raw field's recall at 1 % FPR, theft events per dishonest
cashier per shift, fraud shares and cohort sizes; on a datagen output folder, or on a fresh
in-memory dataset of ``--rows`` rows (default generator parameters otherwise).

    python -m tools.realism --rows 200000 --out .bench/realism.json
    python -m tools.realism --in-transactions var/transactions
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

import pyarrow as pa

from components.contracts import cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="realism", description=__doc__.splitlines()[0])
    p.add_argument("--in-transactions", help="datagen output folder (default: generate)")
    p.add_argument("--rows", type=int, default=200_000, help="rows to generate (no input)")
    p.add_argument("--seed", type=int, default=42, help="generator seed (no input)")
    p.add_argument("--out", default=".bench/realism.json", help="JSON report path")
    return p.parse_args(argv)


def load(args: argparse.Namespace) -> pa.Table:
    if args.in_transactions:
        from components.contracts import storage

        return storage.read_table(args.in_transactions)
    from components.datagen.logic import DatagenParams, generate

    known = {f.name for f in fields(DatagenParams)}
    params = DatagenParams(**{k: getattr(args, k) for k in ("rows", "seed") if k in known})
    return pa.concat_tables(list(generate(params)))


def main(argv: list[str] | None = None) -> None:
    from components.datagen.realism import format_report, realism_report

    args = parse_args(argv)
    report = realism_report(load(args))
    print("\n".join(format_report(report)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"realism: wrote {out}")


if __name__ == "__main__":
    sys.exit(cli.run("realism", main))
