"""The Trainer's checkpoints: what is saved (``dump_checkpoint``), ``save_checkpoint``, the run's restore through
the one load pipeline (``checkpoint/resume.py``), preemption saves, and rank 0's answers shared with every rank."""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import torch

from ember import loggers as _loggers
from ember.checkpoint import resume
from ember.checkpoint import state as run_state
from ember.checkpoint.storage.locations import resolve
from ember.distributed import sharding
from ember.errors import CheckpointError, MisconfigurationError
from ember.loops.progress import Progress
from ember.loops.hooks import keyed


class TrainerCheckpoints:
    """Checkpoint methods of ``ember.Trainer`` (a mixin: the Trainer holds the state they read)."""

    def _wait_quietly(self, primary: BaseException) -> None:
        """Let an in-flight save finish while another error propagates; report its failure, if any."""
        try:
            self.checkpoint_writer.wait()
        except BaseException as e:  # noqa: BLE001
            if e is not primary:
                reason = str(e) or repr(e)
                print(f"ember: a background checkpoint save also failed: {reason}", file=sys.stderr, flush=True)

    def _on_rank0(self, fn):
        """``fn()`` run on rank 0 and its result (or its error) on every rank (a collective)."""
        if self._parallel is None:
            return fn()
        try:
            outcome = (True, fn()) if self.is_global_zero else None
        except Exception as e:  # noqa: BLE001 - every rank raises it
            outcome = (False, e)
        ok, value = self._parallel.broadcast_object(outcome)
        if not ok:
            raise value
        return value

    def _stop_requested(self) -> bool:
        """At a step boundary: if a stop signal arrived, save where we are and ask the loop to stop.

        In a job of many processes the signal may reach one rank (or a callback may stop one rank):
        every rank learns it here, at the same step, and all stop together."""
        requested = self._stop_requests.requested
        if self._parallel is not None:
            flags = self._parallel.reduce(torch.tensor([int(requested), int(self.fit_loop.should_stop)]), "max")
            requested = bool(flags[0])
            if flags[1]:
                self.fit_loop.should_stop = True
        if not requested:
            return False
        if not self.fit_loop.should_stop:
            self.fit_loop.should_stop = True
            for manager in self.checkpoint_managers:
                manager.save_for_resume(self.dump_checkpoint)
            if self.is_global_zero:
                print(f"ember: stop signal {self._stop_requests.signum or ''} received; saved step {self.global_step} "
                      "and stopped. Continue with fit(ckpt_path='last').", flush=True)
        return True

    # ---------------------------------------------------------------- checkpoints
    def dump_checkpoint(self, weights_only: bool = False) -> dict:
        """The checkpoint dict of the current training state (after every on_save_checkpoint hook).

        Args:
            weights_only: keep only the weights and what loading them needs (no optimizer or loop state, and
                the callbacks' ``on_save_checkpoint`` hooks are not run).
        """
        if self.module is None:
            raise MisconfigurationError("save_checkpoint() needs a model: call trainer.fit(model) first.")
        run = self._run or run_state.RunState(model=self.module, loop=Progress())  # a model set without fit
        run = replace(run, callbacks=keyed(self.callbacks))  # callbacks may be added between fits
        if self._failing and self._sharded:
            raise CheckpointError("a sharded (FSDP) checkpoint is written by every rank together, so none can be "
                                  "saved while a rank is failing; resume from the last checkpoint saved before.")
        distributed_run = self._parallel is not None and not self._failing
        ckpt = run_state.collect(run, weights_only, self._parallel.gather_loop_state if distributed_run else None,
                                 self._parallel.state_for_save if self._sharded else None)
        run_state.dump_datamodule(self.datamodule, ckpt)
        module = run_state.unwrap_model(self.module)
        if not weights_only:
            for cb in self.callbacks:
                cb.on_save_checkpoint(self, module, ckpt)
        module.on_save_checkpoint(ckpt)
        return ckpt

    def save_checkpoint(self, filepath: str | os.PathLike, weights_only: bool = False, blocking: bool = True) -> None:
        """Write the current state to ``filepath`` (a path or URL), atomically: complete or absent.

        ``blocking=False`` returns once the state is copied; a background thread writes and commits
        it. At most one save is in flight: the next one waits for it. ``wait_for_checkpoints()``
        waits for it and raises its error if it failed. Only the global-zero process writes; in a job of
        many processes call it on every rank (a blocking save returns once the file is there for all).

        Args:
            filepath: the file to write: a local path or a URL.
            weights_only: save only the weights (see ``dump_checkpoint``).
            blocking: wait until the file is committed (default); False writes in the background.
        """
        state = self.dump_checkpoint(weights_only)
        if self.is_global_zero or self._sharded:  # a sharded checkpoint: every rank writes its shards
            self.checkpoint_writer.save(state, resolve(filepath, self.storage_options), blocking=blocking)
        if blocking and self._parallel is not None:
            self._parallel.barrier()  # as Lightning: on return the file is there for every rank to read

    def wait_for_checkpoints(self) -> None:
        """Wait until every save in flight is committed; raise the error of one that failed."""
        self.checkpoint_writer.wait()

    def _checkpoint_place(self) -> resume.Place:
        """Where this run's checkpoints are, for ``ckpt_path`` (the same for fit and evaluation)."""
        return resume.Place(self.checkpoint_managers, self._default_ckpt_dir(), os.fspath(self.default_root_dir),
                            self.storage_options, _loggers.earlier_checkpoint_dirs(self.loggers))

    def _restore(self, location: str) -> None:
        """Resume the whole run from ``location`` (fit); under FSDP every rank reads its own shards."""
        module, run = run_state.unwrap_model(self.module), self._run
        into = self._parallel.state_for_save(module, run.optimizers) if self._sharded else None
        ckpt = resume.read(location, storage_options=self.storage_options, reshard_into=into, resuming=True)
        resume.resume(run, ckpt, location, trainer=self, module=module, datamodule=self.datamodule,
                      callbacks=self.callbacks,
                      adapt=lambda c: sharding.optimizer_states_for(c, module, run.optimizers, self._sharded),
                      load_sharded_state=self._parallel.load_state if self._sharded else None)
