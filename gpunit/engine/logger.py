"""What a run writes besides checkpoints: TensorBoard events, ``metrics.jsonl`` and PNG image grids."""
from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from gpunit.data.images import save_image


class RunLogger:
    """TensorBoard events + ``metrics.jsonl`` + PNG grids in the run folder.

    ``purge_step`` (used on resume) drops logged values from that step on, which a crash after the
    last checkpoint left behind and the resumed run will log again.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, purge_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        if not enabled:  # e.g. non-zero ranks of a distributed run
            return
        from torch.utils.tensorboard import SummaryWriter  # slow import; only where logging happens

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
        jsonl = self.run_dir / "metrics.jsonl"
        if purge_step is not None and jsonl.is_file():
            kept = [line for line in jsonl.read_text().splitlines() if json.loads(line)["step"] < purge_step]
            jsonl.write_text("".join(line + "\n" for line in kept))
        self.jsonl = jsonl.open("a")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {tag: float(value) for tag, value in values.items()}
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()

    def images(self, step: int, tag: str, grid: Tensor) -> None:
        if not self.enabled:
            return
        if grid.dim() != 3 or grid.shape[0] != 3:
            raise ValueError(f"image grid {tag!r} must have shape (3, H, W), got {tuple(grid.shape)}")
        image = (grid.detach().float().cpu().clamp(-1, 1) + 1) / 2  # [-1, 1] -> [0, 1]
        self.writer.add_image(tag, image, step)
        png = self.run_dir / "images" / f"{tag.replace('/', '_')}_{step:07d}.png"
        save_image(grid.detach().float().cpu(), png)  # parent folders made, [-1, 1] in

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
            self.jsonl.close()

