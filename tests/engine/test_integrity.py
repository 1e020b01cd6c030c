"""A run is never lost, mixed or silently corrupted: checksummed checkpoints and exports, one process per run
folder, a failed write (full disk) ends the run at once, exit codes that tell a stop from a finish, and clear
errors for bad command lines. Each fault as a user meets it, on tiny networks; one real process (kill -9)."""
import errno
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_same_state, run_script, start_training, wait_for_file
from test_engine import assert_same_training_state, make_trainer, run

from gpunit.engine import lock
from gpunit.engine.checkpoints import CheckpointError, CheckpointManager, SaveError, atomic_save, read_checkpoint
from gpunit.engine.config import ConfigError, load_config
from gpunit.gp_unit.config import Stage1Config
from gpunit.gp_unit.models import ContentEncoder
from gpunit.gp_unit.stage1 import Stage1Trainer
from gpunit.gp_unit.weights import load_content_encoder, save_content_encoder

RUN = "stage1_synthetic"  # the run folder's name in configs/gp_unit/stage1/synthetic.yaml


def stage1_sets(root, out, **extra) -> list[str]:
    """A tiny Stage I run on the tiny synthetic set, fp32 and one thread: the same bits in any process."""
    sets = {"data.paired_root": f"{root}/pairs", "data.paired_mask_root": f"{root}/pairs_mask",
            "data.unpaired_root": f"{root}/unpaired", "data.unpaired_mask_root": f"{root}/unpaired_mask",
            "data.test_root": f"{root}/pairs_test", "out_dir": out, "model.base_channels": 8,
            "model.max_channels": 16, "data.num_workers": 0, "train.batch_size": 2, "train.log_every": 1,
            "train.image_every": 1000, "train.checkpoint_every": 2, "train.precision": "fp32",
            "train.channels_last": "false", **extra}
    return [f"{k}={v}" for k, v in sets.items()]


def train_stage1(root, out, *args, **extra):
    return run_script("scripts/train_stage1.py", "--no-progress", *args, "--set", *stage1_sets(root, out, **extra))


@pytest.fixture
def one_thread():
    """As the subprocess runs (OMP_NUM_THREADS=1): a CPU reduction's bits depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- checksums
def overwrite_tensor_bytes(path: Path, tensor: torch.Tensor, fill: bytes | None = None) -> None:
    """Overwrite one tensor's data in a saved file with ``fill`` (zeros by default), as a bad disk block would:
    the archive itself stays intact, so only a checksum can tell."""
    data, raw = path.read_bytes(), tensor.detach().contiguous().numpy().tobytes()
    at = data.find(raw)
    assert at > 0 and data.count(raw) == 1
    fill = bytes(len(raw)) if fill is None else fill
    assert len(fill) == len(raw)
    path.write_bytes(data[:at] + fill + data[at + len(raw):])


def test_zeros_in_one_tensor_are_detected_in_checkpoints_and_exports(tmp_path, caplog):
    manager = CheckpointManager(tmp_path / "run", keep=2)
    weights = torch.linspace(1, 2, 500)
    path = manager.save({"step": 1, "trainer": {"w": weights, "b": torch.ones(3)}}, 1)
    assert torch.equal(manager.load(path)["trainer"]["w"], weights)
    overwrite_tensor_bytes(path, weights)
    with pytest.raises(CheckpointError, match="does not match the checksum") as info:
        manager.load(path)
    assert str(path) in str(info.value)

    encoder = ContentEncoder(64, 8, 8, 16)
    export = save_content_encoder(encoder, tmp_path / "content_encoder.pt")
    load_content_encoder(export)
    overwrite_tensor_bytes(export, max(encoder.state_dict().values(), key=torch.numel))
    with pytest.raises(CheckpointError, match=f"{export} is corrupt"):
        load_content_encoder(export)

    old = tmp_path / "old.pt"  # written before checksums (or by other code): loads, with a one-line note
    torch.save({"step": 1, "w": weights}, old)
    with caplog.at_level("INFO", logger="gpunit.engine.checkpoints"):
        assert torch.equal(read_checkpoint(old)["w"], weights)
    assert [r.getMessage() for r in caplog.records] == [f"note: {old} has no checksum (written before gpunit 0.2 "
                                                        "or by other code); it cannot be verified"]


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    straight = make_trainer()
    run(straight, tmp_path / "a", 12)

    run(make_trainer(), tmp_path / "b", 8)  # checkpoints at steps 4 and 8
    newest = CheckpointManager(tmp_path / "b", keep=2).latest()
    rng = torch.load(newest, weights_only=True)["rng"]["torch"]  # 5056 bytes: 4096 random ones in its middle
    noise = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    middle = (len(rng) - 4096) // 2
    overwrite_tensor_bytes(newest, rng, torch.cat([rng[:middle], noise, rng[middle + 4096:]]).numpy().tobytes())
    with pytest.raises(CheckpointError, match="step-0000008.pt is corrupt"):  # named explicitly: no fallback
        run(make_trainer(), tmp_path / "b", 12, resume=str(newest))

    resumed = make_trainer(seed=5)
    with caplog.at_level("WARNING", logger="gpunit.engine.loop"):
        assert run(resumed, tmp_path / "b", 12, resume="auto") == 12
    assert [r.getMessage().split(" is ")[0].split(":")[0] for r in caplog.records] == [str(newest)]
    assert "Skipping it: resuming from an earlier checkpoint" in caplog.records[0].getMessage()
    assert_same_training_state(straight, resumed)  # steps 5-12 trained again from step 4


# ----------------------------------------------------------------------------- one process per run folder
def test_run_folder_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path, caplog):
    host = socket.gethostname()
    folder, busy = tmp_path / "run", tmp_path / "busy"
    sleeper = subprocess.Popen(["sleep", "60"])  # a live process of this host, not this one
    try:
        busy.mkdir()
        (busy / lock.LOCK_NAME).write_text(json.dumps({"host": host, "pid": sleeper.pid}))
        with pytest.raises(lock.RunLockedError, match=f"in use by process {sleeper.pid} on host {host}"):
            lock.lock_run_dir(busy)
    finally:
        sleeper.kill()
        sleeper.wait()
    with caplog.at_level("WARNING", logger="gpunit.engine.lock"):  # now dead: its lock is stale
        lock.lock_run_dir(busy)
    assert f"(host {host}, PID {sleeper.pid}) is no longer running" in caplog.text
    assert json.loads((busy / lock.LOCK_NAME).read_text()) == {"host": host, "pid": os.getpid()}

    folder.mkdir()
    (folder / lock.LOCK_NAME).write_text(json.dumps({"host": "node-elsewhere", "pid": 1}))
    with pytest.raises(lock.RunLockedError, match="process 1 on host node-elsewhere"):  # its liveness is unknown
        lock.lock_run_dir(folder)
    (folder / lock.LOCK_NAME).unlink()
    assert lock.lock_run_dir(folder) == lock.lock_run_dir(folder)  # this process may take it again
    lock.unlock_run_dir(folder)
    assert not (folder / lock.LOCK_NAME).exists()


def test_kill_9_mid_run_and_a_second_process_on_the_folder(tiny_synthetic, tmp_path, one_thread):
    """A real training process: a second run on its folder (fresh or --resume) refuses, naming it, and writes
    nothing; then the process is killed with -9, and --resume auto takes over its stale lock and ends bitwise
    equal to a run that was never interrupted."""
    out, run_dir = tmp_path / "killed", tmp_path / "killed" / RUN
    proc = start_training("scripts/train_stage1.py", stage1_sets(tiny_synthetic, out, **{
        "train.iterations": 100000, "train.checkpoint_every": 1}))
    try:
        wait_for_file(proc, run_dir / "checkpoints" / "step-0000003.pt")
        before = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "meta.json", "run.lock")}
        for extra in ([], ["--resume"]):
            second = train_stage1(tiny_synthetic, out, *extra, **{"train.iterations": 50, "train.lr": 1e-3})
            assert second.status == 2, second.err[-2000:]
            assert f"is in use by process {proc.pid} on host {socket.gethostname()}" in second.err
        assert before == {name: (run_dir / name).read_bytes() for name in before}
        assert not (run_dir / "checkpoints" / "step-0000050.pt").exists()
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.communicate()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    assert steps == list(range(1, len(steps) + 1))  # one writer: never interleaved
    total = CheckpointManager(run_dir, 1).latest_step() + 2

    resumed = train_stage1(tiny_synthetic, out, "--resume", **{"train.iterations": total})
    assert resumed.status == 0, resumed.err[-2000:]
    assert f"PID {proc.pid}) is no longer running" in resumed.err
    straight = train_stage1(tiny_synthetic, tmp_path / "straight", **{"train.iterations": total,
                                                                      "train.checkpoint_every": total})
    assert straight.status == 0, straight.err[-2000:]
    name = f"checkpoints/step-{total:07d}.pt"
    assert_same_state(CheckpointManager.load(tmp_path / "straight" / RUN / name),
                      CheckpointManager.load(run_dir / name))


# ----------------------------------------------------------------------------- a failed write
class FullDisk:
    """A file that takes ``room`` bytes and then fails as a full disk does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def fill_disk_at(monkeypatch, failing) -> list[dict]:
    """Make torch.save hit a full disk (after 1000 bytes) for the objects ``failing(obj)`` picks; returns a list
    that gets the checkpoint files' bytes at that moment."""
    real, seen = torch.save, []

    def save(obj, f, *args, **kwargs):
        if not failing(obj):
            return real(obj, f, *args, **kwargs)
        folder = Path(f.name if isinstance(f.name, str) else os.readlink(f"/proc/self/fd/{f.name}")).parent
        seen.append({p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith("step-")})
        return real(obj, FullDisk(f, 1000), *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    return seen


def test_a_full_disk_ends_the_run_at_once_and_keeps_the_last_checkpoint(tiny_synthetic, tmp_path, monkeypatch):
    """ENOSPC while saving the step-4 checkpoint, with a loader worker running: one line that says what, where
    and the last good checkpoint; the workers shut down (a worker left behind kept the run hanging); the
    temp file gone and the step-2 checkpoint untouched. Then the run resumes from it."""
    seen = fill_disk_at(monkeypatch, lambda obj: isinstance(obj, dict) and obj.get("step") == 4)
    start = time.perf_counter()
    done = train_stage1(tiny_synthetic, tmp_path, **{"train.iterations": 6, "data.num_workers": 1})
    assert time.perf_counter() - start < 60
    checkpoints = tmp_path / RUN / "checkpoints"
    assert done.status == 2, done.err[-2000:]
    last_line = done.err.strip().splitlines()[-1]
    assert last_line.startswith(f"error: cannot write step-0000004.pt in {checkpoints}: No space left on device "
                                "[ENOSPC]; the partial file was removed"), last_line
    assert f"The last good checkpoint is {checkpoints / 'step-0000002.pt'}" in last_line
    assert multiprocessing.active_children() == []  # the loader's worker is gone
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-0000002.pt"]  # no temp file
    assert seen == [{"step-0000002.pt": (checkpoints / "step-0000002.pt").read_bytes()}]
    monkeypatch.undo()
    again = train_stage1(tiny_synthetic, tmp_path, "--resume", **{"train.iterations": 6})
    assert again.status == 0 and (tmp_path / RUN / "content_encoder.pt").is_file(), again.err[-2000:]


def test_a_full_disk_during_an_export_keeps_the_file_it_would_replace(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    last = CheckpointManager(run_dir, keep=2).save({"step": 7}, 7)
    export = atomic_save({"format": "x", "w": torch.ones(2)}, run_dir / "translator.pt")
    old = export.read_bytes()
    fill_disk_at(monkeypatch, lambda obj: isinstance(obj, dict) and obj.get("format") == "x")
    with pytest.raises(SaveError) as info:
        atomic_save({"format": "x", "w": torch.zeros(100000)}, export)
    assert str(info.value) == (f"cannot write translator.pt in {run_dir}: No space left on device [ENOSPC]; the "
                               "partial file was removed and nothing saved before was changed. The last good "
                               f"checkpoint is {last}: make room (or fix the folder) and rerun the same command "
                               "with --resume auto")
    assert export.read_bytes() == old and sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "translator.pt"]


# ----------------------------------------------------------------------------- exit codes
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_exits_128_plus_its_number_and_resumes_identically(tiny_synthetic, tmp_path, monkeypatch,
                                                                          signum):
    iteration = Stage1Trainer.iteration

    def signalled_at_3(self, step):
        if step == 3:
            os.kill(os.getpid(), signum)  # as Slurm (SIGTERM) or Ctrl+C (SIGINT) would
        return iteration(self, step)

    monkeypatch.setattr(Stage1Trainer, "iteration", signalled_at_3)
    stopped = train_stage1(tiny_synthetic, tmp_path / "stopped", **{"train.iterations": 6})
    assert stopped.status == 128 + signum, stopped.err[-2000:]
    assert stopped.err.strip().splitlines()[-1] == (f"stopped by {signum.name} after saving step 3 (exit status "
                                                    f"{128 + signum}); rerun the same command with --resume auto "
                                                    "to continue")
    assert not (tmp_path / "stopped" / RUN / "content_encoder.pt").exists()  # nothing exported
    monkeypatch.undo()
    resumed = train_stage1(tiny_synthetic, tmp_path / "stopped", "--resume", **{"train.iterations": 6})
    assert resumed.status == 0, resumed.err[-2000:]
    straight = train_stage1(tiny_synthetic, tmp_path / "straight", **{"train.iterations": 6})
    name = "checkpoints/step-0000006.pt"
    assert_same_state(CheckpointManager.load(tmp_path / "straight" / RUN / name),
                      CheckpointManager.load(tmp_path / "stopped" / RUN / name))
    assert straight.status == 0


def test_iterations_must_be_positive(tiny_synthetic, tmp_path):
    with pytest.raises(ConfigError, match="'train.iterations' must be a positive number, got 0"):
        load_config(None, Stage1Config, ["train.iterations=0"])
    done = train_stage1(tiny_synthetic, tmp_path, **{"train.iterations": 0})
    assert done.status == 2 and "'train.iterations' must be a positive number, got 0" in done.err
    assert not (tmp_path / RUN).exists()
    with pytest.raises(ValueError, match="total_steps"):  # the loop itself, for code that builds no config
        run(make_trainer(), tmp_path / "toy", 0)


# ----------------------------------------------------------------------------- clear command-line errors
def test_bad_files_and_folders_on_the_command_line_are_one_line_errors(tmp_path, monkeypatch):
    import gpunit.translators

    def no_model(*args, **kwargs):
        raise AssertionError("the translator was loaded before the arguments were checked")

    images = tmp_path / "images"
    images.mkdir()
    torch.manual_seed(0)
    from PIL import Image
    Image.fromarray(torch.randint(0, 255, (16, 16, 3), dtype=torch.uint8).numpy()).save(images / "a.png")
    (tmp_path / "taken").write_text("a file where the output folder should go")
    with monkeypatch.context() as mp:
        mp.setattr(gpunit.translators, "load_translator", no_model)
        done = run_script("scripts/translate.py", "--checkpoint", "any.pt", "--input", images,
                          "--output", tmp_path / "taken")
    assert done.status == 2 and done.err.strip().splitlines()[-1].endswith(
        f"--output {tmp_path / 'taken'} is a file, not a folder: give a folder (it is created if missing)")

    text = tmp_path / "notes.pt"
    text.write_text("these are my notes, not weights\n")
    done = run_script("scripts/translate.py", "--checkpoint", text, "--input", images, "--output", tmp_path / "o")
    assert done.status == 2 and "KeyError" not in done.err
    assert f"error: {text}: cannot be read, it is not a PyTorch checkpoint (a text file" in done.err

    class RunsCode:
        def __reduce__(self):
            return os.system, ("echo owned",)

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"state": RunsCode()}, unsafe)
    done = run_script("scripts/translate.py", "--checkpoint", unsafe, "--input", images, "--output", tmp_path / "o")
    assert done.status == 2 and "weights_only" not in done.err
    assert done.err.strip().splitlines()[-1] == (
        f"error: {unsafe} holds a Python object (posix.system), not only tensors and plain values; gpunit refuses "
        "to unpickle it because loading such a file can run arbitrary code. Use a file of weights (a state dict) "
        "from a source you trust, or re-export it as one")

    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_script("scripts/evaluate.py", "--protocol", "paper", "--real", empty, "--fake", images)
    assert done.status == 2 and f"--real: no images found in folder {empty}" in done.err
