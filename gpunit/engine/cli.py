"""Shared command-line plumbing: logging set-up and one clear line for errors a user can cause."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from gpunit.data.images import UnreadableImageError
from gpunit.engine.checkpoints import CheckpointError
from gpunit.engine.config import ConfigError, add_config_arguments, config_from_args
from gpunit.engine.loop import NonFiniteLossError
from gpunit.engine.pretrained import MissingWeightsError
from gpunit.engine.run import RunExistsError

# Errors with a message written for the user: print it, no traceback.
USER_ERRORS = (ConfigError, CheckpointError, MissingWeightsError, RunExistsError, NonFiniteLossError,
               UnreadableImageError, FileNotFoundError, NotADirectoryError, ValueError)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main``; a user error ends the program with its message and exit status 2
    (set ``GPUNIT_TRACEBACK=1`` to see the traceback instead)."""
    setup_logging()
    try:
        status = main()
    except USER_ERRORS as err:
        if os.environ.get("GPUNIT_TRACEBACK"):  # developers: the full traceback
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)


def training_main(description: str, config_cls, run, default_config: str) -> int:
    """The command line of scripts/train_stage1.py and train_stage2.py."""


    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default_config=default_config)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    args = parser.parse_args()
    try:
        cfg = config_from_args(args, config_cls)
    except ConfigError as err:
        parser.error(str(err))
    outputs = run(cfg, resume=args.resume, progress=not args.no_progress)
    if not outputs:
        print("stopped before the end (or not rank 0); resume with the same command and --resume")
        return 0
    for name, value in outputs.items():
        print(f"{name}: {value}")
    return 0


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)
