"""Crash-safe training state: everything a killed run needs to go on exactly where it was.

A state is one folder ``resume/step-<N>/`` holding the weights (``model.safetensors``) and
``trainer.pt`` (optimizer state, step, samples seen, FLOPs tally, metrics history, RNG
states, and the run's fingerprint). The folder is written in full first; only then does
the one-line file ``resume/latest`` (replaced atomically) point at it, and older folders
are removed. A kill at any moment leaves ``latest`` naming a complete state. The learning
rate schedule and the batch sampler are functions of the step, so the step is their state.

A scheduler's stop (SIGTERM: SLURM's time limit, preemption, ``scancel``; SIGUSR1: an
earlier warning asked for with ``--signal``) is caught by ``StopSignals``: the step in
progress finishes, the state is saved at once, and the command exits with
``benchmark.errors.PREEMPTED_EXIT`` (75, EX_TEMPFAIL), so that the scheduler requeues the job or Snakemake retries it; the rerun
resumes from that step and ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_state(resume_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, trainer: dict) -> Path:
    resume_dir = Path(resume_dir)
    folder = resume_dir / f"step-{trainer['step']:08d}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({**trainer, "optimizer": optimizer.state_dict(), "rng": rng}, folder / "trainer.pt")
    _write_atomic(resume_dir / "latest", folder.name + "\n")
    for old in resume_dir.glob("step-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def load_state(resume_dir: Path, fingerprint: dict) -> dict | None:
    """The latest complete state of this same run, or None (no state, or another run's)."""
    latest = Path(resume_dir) / "latest"
    if not latest.is_file():
        return None
    folder = Path(resume_dir) / latest.read_text().strip()
    if not _complete(folder):
        complete = sorted(f for f in Path(resume_dir).glob("step-*") if _complete(f))
        if not complete:
            print(f"resume: {latest} names {folder.name}, which is gone, and no complete state is left; "
                  "starting afresh")
            return None
        print(f"resume: {latest} names {folder.name}, which is gone; resuming from the newest complete state "
              f"{complete[-1].name}")
        folder = complete[-1]
    trainer = torch.load(folder / "trainer.pt", weights_only=False)
    if trainer["fingerprint"] != fingerprint:
        changed = sorted(k for k in fingerprint if trainer["fingerprint"].get(k) != fingerprint[k])
        print(f"resume: {folder} is from a run with other settings ({', '.join(changed)}); starting afresh")
        return None
    trainer["weights"] = load_file(str(folder / "model.safetensors"))
    return trainer


def _complete(folder: Path) -> bool:
    return (folder / "trainer.pt").is_file() and (folder / "model.safetensors").is_file()


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def clear_state(resume_dir: Path) -> None:
    shutil.rmtree(resume_dir, ignore_errors=True)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopSignals:
    """While active, SIGTERM and SIGUSR1 only record that a stop was asked for (``received``);
    the previous handlers come back on exit. Outside the main thread it does nothing (Python
    delivers signals to the main thread only)."""

    def __init__(self):
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        try:
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread
            self._previous.clear()
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
