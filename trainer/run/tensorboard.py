"""RUN/tb/: TensorBoard event files written from the same records that go to events.jsonl.

`EventLog.write` hands every record to this sink (rank 0 only), so there is no second bookkeeping
path. The x axis is the run's global step: one per epoch, exemplar level and phase record, over every
stage and phase (events.STEPPED). It is part of the run's saved state (EventLog.state_dict, in sealed phases and in-phase
checkpoints), so a resumed or requeued job continues the same curves: the writer is opened with
`purge_step` at the first step after the restored one, which hides whatever a killed job wrote after its last checkpoint,
and the re-run records take the same steps again. No step is written twice or goes backwards.

Writing never stops training: an unwritable directory, a full disk or a missing `tensorboard` package
is one warning, and the run goes on without TensorBoard.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

EPOCH_SCALARS = ("lr", "img_s", "data_wait_share", "peak_mem_mb", "data_ms", "forward_ms", "backward_ms",
                 "optimizer_ms", "other_ms")
PHASE_SCALARS = ("accuracy", "accuracy_nme", "accuracy_top5", "accuracy_base", "accuracy_old", "accuracy_new",
                 "average_accuracy_so_far", "forgetting_so_far", "exemplars_s")


class TensorBoardSink:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.writer = None
        self.failed = False
        self.pending: list[tuple[str, str]] = []

    def _open(self, step: int):
        """The writer, opened at the first record of this job, whose step is `step`: everything an earlier
        (killed) job wrote at `step` or later is hidden (purge_step)."""
        if self.writer is None and not self.failed:
            from torch.utils.tensorboard import SummaryWriter

            self.directory.mkdir(parents=True, exist_ok=True)
            fresh = not any(self.directory.glob("events.out.tfevents.*"))
            self.writer = SummaryWriter(str(self.directory), purge_step=step)
            for tag, text in self.pending if fresh else ():
                self.writer.add_text(tag, text, 0)
            self.pending = []
        return self.writer

    def _safely(self, what: str, fn) -> None:
        if self.failed:
            return
        try:
            fn()
        except Exception as e:  # never stop training for a dashboard
            self.failed = True
            log.warning("TensorBoard: %s failed (%s: %s); the run goes on without RUN/tb", what, type(e).__name__,
                        str(e).splitlines()[0][:200] if str(e) else "")

    def record(self, event: dict, step: int) -> None:
        self._safely(f"writing a '{event.get('event')}' record", lambda: self._record(event, step))

    def _record(self, event: dict, step: int) -> None:
        kind = event.get("event")
        if kind == "epoch":
            w = self._open(step)
            stage = event["stage"]
            for key, value in event.items():
                if key == "loss" or key.startswith("loss_"):
                    w.add_scalar(f"loss/{stage}/{key}", value, step)
                elif key in EPOCH_SCALARS and isinstance(value, (int, float)):
                    w.add_scalar(f"{stage}/{key}", value, step)
            w.add_scalar("phase", event["phase"], step)
            w.flush()
        elif kind == "exemplars":
            w = self._open(step)
            for g in event.get("groups", []):
                name = f"{g['what']}_{g['classes'][0]}-{g['classes'][-1]}"
                w.add_scalar(f"meta_loss/{name}/before", g["before"], step)
                w.add_scalar(f"meta_loss/{name}/after", g["after"], step)
            w.flush()
        elif kind == "phase":
            w = self._open(step)
            for key in PHASE_SCALARS:
                if event.get(key) is not None:
                    w.add_scalar(f"eval/{key}", event[key], step)
            w.flush()

    def text(self, tag: str, text: str) -> None:
        """Text written once per run (the resolved config): at the first record, into a directory that held
        no event files when this job opened it."""
        self.pending.append((tag, text))

    def image(self, tag: str, grid, step: int) -> None:
        def go():
            w = self._open(step)
            w.add_image(tag, grid, step)
            w.flush()
        self._safely(f"writing image '{tag}'", go)

    def close(self) -> None:
        if self.writer is not None:
            self._safely("closing", self.writer.close)
