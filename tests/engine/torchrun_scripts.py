"""Run training scripts one after the other in the processes of one torchrun job (for
tests/engine/test_distributed.py). A torchrun launch costs two interpreter starts and a rendezvous (~10 s on two
cores), so runs that can share the processes share one launch.

    torchrun --standalone --nproc_per_node=2 tests/engine/torchrun_scripts.py '[["scripts/train_stage1.py", ...], ...]'

Each list is a script and its arguments, run as ``python <script> <arguments>`` would run it (tests/helpers.py);
a run that fails ends the job with its exit status.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for helpers
from helpers import run_script  # noqa: E402

if __name__ == "__main__":
    for script, *args in json.loads(sys.argv[1]):
        done = run_script(script, *args)
        print(done.out, end="")
        print(done.err, end="", file=sys.stderr)
        if done.status:
            sys.exit(done.status)
