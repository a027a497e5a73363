"""Save benchmark: sync save time against a raw write of the same bytes, and the training stall of
async saves, per checkpoint size; every method writes a fresh file in the same folder, fsynced.

ember's background save is measured twice, on the same states in the same run: as the trainer runs it
now (``snapshot_barrier()`` before any user code, so the host copy overlaps only data loading and the
loop's own work) and as it ran before (the barrier before the optimizer step, so the copy also overlapped
the next forward and backward, which let in-place edits by user code reach the snapshot)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from bench.common import (collect, fsync_file, lightning_available, lightning_io, log, now, optional_import, remove,
                          rotated, tensor_memoryview, write_all)
from bench.state import BenchState, TrainingStep, make_state

SYNC = ["raw", "torch.save", "safetensors", "Lightning", "ember"]
EMBER_NOW = "ember async (now: barrier before user code)"
EMBER_PREV = "ember async (previous: barrier before the optimizer step)"
LIGHTNING_ASYNC = "Lightning async"
ASYNC = [LIGHTNING_ASYNC, EMBER_PREV, EMBER_NOW]
LIGHTNING_METHODS = {"Lightning", LIGHTNING_ASYNC}
EXT = {"raw": ".bin", "torch.save": ".pt", "safetensors": ".safetensors", "Lightning": ".ckpt",
       "ember": ".ckpt", LIGHTNING_ASYNC: ".ckpt", EMBER_PREV: ".ckpt", EMBER_NOW: ".ckpt"}
NOTES = {
    "raw": "sequential write() of each tensor's bytes via memoryview, then fsync (the limit)",
    "torch.save": "torch.save(ckpt, path) + fsync added by the benchmark",
    "safetensors": "safetensors.torch.save_file(flat tensors, path) + fsync added by the benchmark",
    "Lightning": "TorchCheckpointIO().save_checkpoint(ckpt, path) + fsync added by the benchmark",
    "ember": "ember.checkpoint.io.save_checkpoint (temp file, fsync, rename, fsync folder; its own)",
}


@dataclass
class SizeResult:
    size_mib: float
    nbytes: int
    save: dict[str, list[float]] = field(default_factory=dict)      # method -> seconds per repeat
    file_bytes: dict[str, int] = field(default_factory=dict)
    stall: dict[str, list[float]] = field(default_factory=dict)     # async method -> stall seconds
    parts: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # async method -> part -> s
    loop_steps: list[int] = field(default_factory=list)
    loop: dict[str, list[float]] = field(default_factory=dict)      # "none"/async method -> loop seconds
    loop_tail: dict[str, list[float]] = field(default_factory=dict)  # time waiting for commit after loop
    missing: dict[str, str] = field(default_factory=dict)           # method -> "not installed"/"failed: ..."


@dataclass
class SaveResults:
    sizes: list[SizeResult]
    step_s: float            # calibrated simulated training step, alone
    step_reps: int
    loop_factor: float
    data_s: float = 0.0      # simulated data loading (next(loader)) before each step
    notes: dict[str, str] = field(default_factory=lambda: dict(NOTES))


# ----------------------------------------------------------------------------- sync methods

def save_raw(st: BenchState, path: Path) -> None:
    with open(path, "wb", buffering=0) as f:
        for t in st.tensors:
            write_all(f, tensor_memoryview(t))
        os.fsync(f.fileno())


def save_torch(st: BenchState, path: Path) -> None:
    torch.save(st.ckpt, path)
    fsync_file(path)


def save_safetensors(st: BenchState, path: Path) -> None:
    from safetensors.torch import save_file

    save_file(st.flat, str(path))
    fsync_file(path)


def save_lightning(st: BenchState, path: Path) -> None:
    lightning_io().TorchCheckpointIO().save_checkpoint(st.ckpt, path)
    fsync_file(path)


def save_ember(st: BenchState, path: Path) -> None:
    from ember.checkpoint.io import save_checkpoint

    save_checkpoint(st.ckpt, path)


SYNC_FN: dict[str, Callable[[BenchState, Path], None]] = {
    "raw": save_raw, "torch.save": save_torch, "safetensors": save_safetensors,
    "Lightning": save_lightning, "ember": save_ember,
}


# ----------------------------------------------------------------------------- async methods

def load_batch(data_s: float) -> None:
    """Stand-in for fetching the next batch (``next(loader)``): the training thread waits ``data_s`` for
    DataLoader workers, using no CPU itself. The only work, besides the loop's own, that the host copy
    of an ember background save overlaps now."""
    if data_s > 0:
        time.sleep(data_s)


def stall_ember_now(st: BenchState, path: Path, writer, step: TrainingStep, data_s: float) -> dict[str, float]:
    """As the trainer runs it now: save(), the next batch is loaded, then ``snapshot_barrier()`` before
    any user code (hooks, training_step). Stall = time in save() + time in the barrier."""
    t0 = now()
    writer.save(st.ckpt, path, blocking=False, deferred=st.deferred)
    t1 = now()
    load_batch(data_s)
    t2 = now()
    writer.snapshot_barrier()
    t3 = now()
    step.step()  # runs while the writer thread checksums and writes (not part of the stall)
    t4 = now()
    writer.wait()
    t5 = now()
    return {"stall": (t1 - t0) + (t3 - t2), "call": t1 - t0, "barrier": t3 - t2, "step": t4 - t3,
            "commit": t5 - t4}


def stall_ember_prev(st: BenchState, path: Path, writer, step: TrainingStep, data_s: float) -> dict[str, float]:
    """As the trainer ran it before: save(), the next batch is loaded, one training step runs, then
    ``snapshot_barrier()`` (before the optimizer step). Stall = time in save() + time in the barrier."""
    t0 = now()
    writer.save(st.ckpt, path, blocking=False, deferred=st.deferred)
    t1 = now()
    load_batch(data_s)
    t2 = now()
    step.step()
    t3 = now()
    writer.snapshot_barrier()
    t4 = now()
    writer.wait()
    t5 = now()
    return {"stall": (t1 - t0) + (t4 - t3), "call": t1 - t0, "barrier": t4 - t3, "step": t3 - t2,
            "commit": t5 - t4}


def stall_lightning(st: BenchState, path: Path, writer, step: TrainingStep, data_s: float) -> dict[str, float]:
    """Stall = time in AsyncCheckpointIO.save_checkpoint (it clones every tensor on the caller)."""
    io = lightning_io()
    aio = io.AsyncCheckpointIO(io.TorchCheckpointIO())
    t0 = now()
    aio.save_checkpoint(st.ckpt, path)
    t1 = now()
    load_batch(data_s)
    t2 = now()
    step.step()
    t3 = now()
    aio.teardown()  # waits for the write
    t4 = now()
    fsync_file(path)
    return {"stall": t1 - t0, "call": t1 - t0, "barrier": 0.0, "step": t3 - t2, "commit": t4 - t3}


STALL_FN = {EMBER_NOW: stall_ember_now, EMBER_PREV: stall_ember_prev, LIGHTNING_ASYNC: stall_lightning}


def loop_with_save(st: BenchState, path: Path, method: str, writer, step: TrainingStep,
                   n_steps: int, data_s: float) -> tuple[float, float]:
    """Run ``n_steps`` simulated steps, each after loading its batch, with one async save started before
    the first (or none). Returns (total seconds including waiting for the commit, seconds spent waiting
    after the loop)."""
    before = after = finish = None
    t0 = now()
    if method in (EMBER_NOW, EMBER_PREV):
        writer.save(st.ckpt, path, blocking=False, deferred=st.deferred)
        finish = writer.wait
        if method == EMBER_NOW:
            before = writer.snapshot_barrier  # the trainer now: before each step's user code
        else:
            after = writer.snapshot_barrier   # the trainer before: before each optimizer step
    elif method == LIGHTNING_ASYNC:
        io = lightning_io()
        aio = io.AsyncCheckpointIO(io.TorchCheckpointIO())
        aio.save_checkpoint(st.ckpt, path)
        finish = aio.teardown
    for _ in range(n_steps):
        load_batch(data_s)
        if before is not None:
            before()
        step.step()
        if after is not None:
            after()
    t1 = now()
    if finish is not None:
        finish()
    t2 = now()
    return t2 - t0, t2 - t1


# ----------------------------------------------------------------------------- driver

def _fail(res: SizeResult, method: str, e: BaseException) -> None:
    res.missing[method] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    log(f"  {method} FAILED: {res.missing[method]}")


def run_save(sizes_mib: list[float], repeats: int, workdir: Path, *, step_ms: float = 75.0, data_ms: float = 5.0,
             loop_factor: float = 1.25, min_loop_steps: int = 10, use_lightning: bool = True) -> SaveResults:
    from ember.checkpoint.writer import CheckpointWriter

    have_lightning = lightning_available(use_lightning)
    have_safetensors = optional_import("safetensors.torch") is not None
    step = TrainingStep(step_ms)
    data_s = data_ms / 1e3
    log(f"save: simulated training step = {step.reps} x matmul 1024^2 = {step.step_s * 1e3:.1f} ms, "
        f"data loading = {data_ms:g} ms")
    out = SaveResults(sizes=[], step_s=step.step_s, step_reps=step.reps, loop_factor=loop_factor, data_s=data_s)
    workdir.mkdir(parents=True, exist_ok=True)

    for size in sizes_mib:
        st = make_state(size)
        res = SizeResult(size_mib=size, nbytes=st.nbytes)
        out.sizes.append(res)
        for m in LIGHTNING_METHODS:
            if not have_lightning:
                res.missing[m] = "not installed" if use_lightning else "disabled (--no-lightning)"
        if not have_safetensors:
            res.missing["safetensors"] = "not installed"
        writer = CheckpointWriter()  # one per size, reused across repeats as a trainer reuses it
        tag = f"{size:g}MiB"
        log(f"save: {tag} = {st.nbytes} bytes, {repeats} repeat(s)")
        warm = workdir / f"warmup-{tag}.bin"  # untimed: the first big write after building the state was
        try:                                  # 2-4x slower than the rest, whichever method came first
            save_raw(st, warm)
        finally:
            remove(warm)
        warm = workdir / f"warmup-{tag}.ckpt"  # untimed: the writer's first save allocates its host buffers;
        try:                                   # a trainer's later saves reuse them, as every timed one does
            writer.save(st.ckpt, warm, blocking=False, deferred=st.deferred)
            writer.snapshot_barrier()
            writer.wait()
        finally:
            remove(warm)
        for r in range(repeats):
            for method in rotated(SYNC + ASYNC, r):
                if method in res.missing:
                    continue
                path = workdir / f"{method.replace(' ', '-').replace('.', '_')}-{tag}-r{r}{EXT[method]}"
                try:
                    collect()
                    if method in SYNC:
                        t0 = now()
                        SYNC_FN[method](st, path)
                        dt = now() - t0
                        res.save.setdefault(method, []).append(dt)
                        log(f"  r{r} {method:16s} {dt:8.3f} s")
                    else:
                        parts = STALL_FN[method](st, path, writer, step, data_s)
                        res.stall.setdefault(method, []).append(parts["stall"])
                        for k, v in parts.items():
                            res.parts.setdefault(method, {}).setdefault(k, []).append(v)
                        log(f"  r{r} {method:58s} stall {parts['stall']:8.3f} s "
                            f"(call {parts['call']:.3f}, barrier {parts['barrier']:.3f}, step {parts['step']:.3f}, "
                            f"commit {parts['commit']:.3f})")
                    res.file_bytes.setdefault(method, path.stat().st_size)
                except Exception as e:  # noqa: BLE001 - reported, the rest runs
                    _fail(res, method, e)
                    if method in (EMBER_NOW, EMBER_PREV):
                        writer = CheckpointWriter()
                finally:
                    remove(path)
            # end-to-end: a short simulated loop with vs without one async save, same run
            ref = (res.save.get("ember") or res.save.get("raw") or [step.step_s])[-1]
            n = max(min_loop_steps, math.ceil(loop_factor * ref / step.step_s))
            res.loop_steps.append(n)
            for method in rotated(["none"] + ASYNC, r):
                if method in res.missing:
                    continue
                path = workdir / f"loop-{method.replace(' ', '-')}-{tag}-r{r}.ckpt"
                try:
                    collect()
                    total, tail = loop_with_save(st, path, method, writer, step, n, data_s)
                    res.loop.setdefault(method, []).append(total)
                    res.loop_tail.setdefault(method, []).append(tail)
                    log(f"  r{r} loop {n} steps, save={method:58s} {total:8.3f} s (waited {tail:.3f} s after)")
                except Exception as e:  # noqa: BLE001
                    _fail(res, method, e)
                finally:
                    remove(path)
        del writer, st
        collect()
    return out
