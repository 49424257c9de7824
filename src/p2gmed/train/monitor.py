"""What a person watching a training run sees (rank 0 only): TensorBoard, `metrics.jsonl` and a progress bar.

TensorBoard events go to `RUN/tb`: every logged scalar of `metrics.jsonl`, and at each validation one case figure
of a held-out subject (`Validation.figure`). A resumed run purges the events a killed run wrote after its last
checkpoint, so the curves show each step once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from p2gmed.train.runtime import append_metrics

#: the TensorBoard tag of the validation case figure
FIGURE_TAG = "validation/case"


class RunMonitor:
    """TensorBoard writer, metrics file and progress bar of one run, opened at `step` (0, or the resumed step).

    Args:
        run_dir: the run folder RUN (events go to RUN/tb).
        metrics_path: RUN/metrics.jsonl.
        step: the step the run starts from.
        max_steps: the step it trains to (the bar's total).
        desc: the bar's label (the task name).
    """

    def __init__(self, run_dir: Path, metrics_path: Path, step: int, max_steps: int, desc: str):
        self.metrics_path = metrics_path
        # purge_step drops events a killed run wrote after its last checkpoint
        self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=step + 1 if step else None)
        self.progress = tqdm(total=max_steps, initial=step, desc=desc, unit="step", leave=False)

    def log(self, record: dict[str, float]) -> None:
        """Append `record` to metrics.jsonl and its numbers to TensorBoard."""
        append_metrics(self.metrics_path, record, self.writer)

    def advance(self, loss: float) -> None:
        """One step done: move the bar and show the step's loss."""
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{loss:.4f}")

    def figure(self, figure: Any, step: int, tag: str = FIGURE_TAG) -> None:
        """Log a matplotlib figure as an image at `step` and close it; None (nothing to draw) logs nothing."""
        if figure is not None:
            self.writer.add_figure(tag, figure, global_step=step, close=True)

    def close(self) -> None:
        self.progress.close()
        self.writer.close()
