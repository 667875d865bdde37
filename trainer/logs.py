"""Where a run's numbers go besides metrics.jsonl/csv: `--log tensorboard` (OUT/tensorboard).

Per optimizer step: the training loss and the learning rate; per epoch: every metric of the
epoch's record (losses, accuracies, images/s). Rank 0 alone writes. TensorBoard is an optional
extra (`softlabels.extras`).
"""

from __future__ import annotations

from pathlib import Path

from softlabels.extras import install_hint

LOGGERS = ("tensorboard",)


def check_loggers(names) -> None:
    """Refuse unknown loggers, and a missing TensorBoard, before any data is read."""
    unknown = [name for name in names if name not in LOGGERS]
    if unknown:
        raise ValueError(f"unknown --log {unknown[0]!r}; choose one of: {', '.join(LOGGERS)}")
    if "tensorboard" in names:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ValueError(f"--log tensorboard needs TensorBoard: {install_hint('tensorboard')}") from None


class RunLog:
    """The loggers a run asked for; does nothing when it asked for none."""

    def __init__(self, names: tuple[str, ...], out: Path, first_step: int = 0):
        check_loggers(names)
        self.writer = None
        if "tensorboard" in names:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError(f"--log tensorboard needs TensorBoard: {install_hint('tensorboard')}") from None
            # purge_step: a resumed run drops events logged after its checkpoint, so curves never fork
            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=first_step or None)

    @property
    def per_step(self) -> bool:
        return self.writer is not None

    def step(self, step: int, loss: float, lr: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss_step", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, record: dict) -> None:
        if self.writer is None:
            return
        for name, value in record.items():
            if name != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{name}", value, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
