"""The command line of the benchmark (`python scripts/bench.py`, `make bench`)."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import List, Optional, Sequence, Tuple

import tyro

from bench.config import BenchConfig, BenchError, make_plan
from bench.devices import cuda_device_count, resolve_device

TRAIN_ARGS_FLAG = "--train-args"


def split_train_args(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """The benchmark's own arguments, and the ns-train options after --train-args (which start with "--", so the
    option parser would take them for the benchmark's)."""
    if TRAIN_ARGS_FLAG not in argv:
        return list(argv), []
    index = list(argv).index(TRAIN_ARGS_FLAG)
    return list(argv[:index]), list(argv[index + 1 :])


def parse_args(argv: Sequence[str]) -> BenchConfig:
    own, train_args = split_train_args(argv)
    config = tyro.cli(BenchConfig, args=own)
    return replace(config, train_args=tuple(train_args)) if train_args else config


def main(argv: Optional[Sequence[str]] = None) -> None:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        plan = make_plan(config, resolve_device(config.device), cuda_device_count())
    except BenchError as error:
        raise SystemExit(f"bench: {error}") from None
    # Imported once the options are known to be measurable: nerfstudio takes seconds to import and warns as it does.
    from bench.harness import run

    run(config, plan)
