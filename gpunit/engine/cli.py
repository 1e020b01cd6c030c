"""Shared command-line plumbing: logging set-up and one clear line for errors a user can cause."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable

from gpunit.data.images import UnreadableImageError
from gpunit.engine.checkpoints import CheckpointError, SaveError
from gpunit.engine.config import ConfigError, add_config_arguments, config_from_args
from gpunit.engine.lock import RunLockedError
from gpunit.engine.loop import NonFiniteLossError, StoppedBySignal
from gpunit.engine.pretrained import MissingWeightsError
from gpunit.engine.run import RunExistsError

# Errors with a message written for the user: print it, no traceback.
USER_ERRORS = (ConfigError, CheckpointError, MissingWeightsError, RunExistsError, RunLockedError, NonFiniteLossError,
               SaveError, UnreadableImageError, FileNotFoundError, NotADirectoryError, ValueError)
# a full disk, a read-only folder or a quota met outside a checkpoint save (logs, images): one line too
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG}


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main``; a user error ends the program with its message and exit status 2
    (set ``GPUNIT_TRACEBACK=1`` to see the traceback instead). A run stopped by a signal after saving
    exits with 128 + the signal number (143 SIGTERM, 130 SIGINT), said in the last line."""
    setup_logging()
    try:
        status = main()
    except StoppedBySignal as stopped:
        print(stopped, file=sys.stderr)
        sys.exit(stopped.exit_status)
    except KeyboardInterrupt:  # Ctrl+C outside training, or a second one during it (nothing more is saved)
        print("interrupted by Ctrl+C (exit status 130); a training run keeps its last saved checkpoint: rerun "
              "the same command with --resume auto", file=sys.stderr)
        sys.exit(130)
    except (*USER_ERRORS, OSError) as err:
        if os.environ.get("GPUNIT_TRACEBACK") or not (isinstance(err, USER_ERRORS) or err.errno in DISK_ERRNOS):
            raise  # developers: the full traceback; and an OSError of another kind is a bug to report
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
    outputs = run(cfg, resume=args.resume, progress=not args.no_progress)  # a signal raises StoppedBySignal
    if not outputs:  # a torchrun rank other than 0: rank 0 exports and prints
        return 0
    for name, value in outputs.items():
        print(f"{name}: {value}")
    return 0


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)
