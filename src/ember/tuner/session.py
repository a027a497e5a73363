"""One search inside ``fit`` (the learning-rate finder, the batch-size finder): the run's state is saved
to a checkpoint first (ember's own format), the loop runs with the search's settings and callbacks
only, then the checkpoint is loaded back, so weights, optimizers, schedulers, callbacks, the loop's
position and every random state are as they were before the search."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import replace
from typing import Any, Iterator

from ember.loops.bar import FitBar
from ember.seed import get_rng_state, set_rng_state


class TunerExit(BaseException):
    """Raised from ``on_fit_start`` by a tuner that only searches: ``fit`` ends cleanly (Lightning's
    ``_TunerExitException``), without running ``on_exception`` callbacks."""


@contextlib.contextmanager
def searching(trainer, callbacks: list, **settings: Any) -> Iterator[Any]:
    """Run the block with ``callbacks`` as the only callbacks, no logger, no progress bar and the fit
    settings changed by ``settings`` (``max_steps=...``); yields the fit loop. Everything is put back
    after, and the checkpoint written before is loaded again."""
    loop, hooks, strategy = trainer.fit_loop, trainer._hooks, trainer.strategy
    # rank 0's name on every rank: each reads back the checkpoint rank 0 writes (under FSDP: all write its shards)
    path = strategy.broadcast(os.path.join(str(trainer.default_root_dir), f".tuner_{uuid.uuid4().hex}.ckpt"))
    trainer.save_checkpoint(path)
    saved = (loop.settings, hooks.callbacks, trainer._hub.logger, loop.bar, loop._resume, get_rng_state(),
             loop.progress.state_dict(), [c for c in loop.parts.schedulers], (loop.parts.train_batches,
                                                                              loop.parts.val_limit))
    loop.settings = replace(loop.settings, **settings)
    hooks.callbacks, trainer._hub.logger, loop.bar, loop._resume = list(callbacks), None, FitBar(False), None
    hooks.forget()
    try:
        yield loop
    finally:
        loop.settings, hooks.callbacks, trainer._hub.logger, loop.bar = saved[:4]
        loop.parts.schedulers[:] = saved[7]
        loop.parts.train_batches, loop.parts.val_limit = saved[8]  # the counts the search's settings fixed: gone
        hooks.forget()
        loop.should_stop, loop._pending_grads = False, False
        loop.ended_part_way = False  # a search stopped mid-epoch; the fit's current_epoch must not count it
        try:
            trainer._restore(path)  # weights, optimizers, schedulers, callbacks, progress: as before the search
        except BaseException:
            if trainer.is_global_zero:
                _remove(path)  # the fit fails: no rank reads it again
            raise
        strategy.barrier()  # every rank has read it back before rank 0 removes it
        if trainer.is_global_zero:
            _remove(path)
        loop._resume = saved[4]  # a fit resumed from a checkpoint still resumes where it was told to
        if saved[4] is None:
            set_rng_state(saved[5])
        loop.progress.load_state_dict(saved[6])


def reset_progress(loop, state: dict) -> None:
    """Back to ``state`` (a progress state) for the next trial: nothing pending, nothing stopping."""
    loop.progress.load_state_dict(state)
    loop.should_stop, loop._pending_grads, loop._resume = False, False, None


def _remove(path: str) -> None:
    """The file, or the folder of a sharded (FSDP) checkpoint."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
