"""The figures of issue 19, measured in one run and reported side by side with their limit or peer
(min / median / max of per-repeat ratios; methods alternate within each repeat):

- load: ``torch.load(weights_only=True)`` time ÷ ``load_checkpoint(verify=True)`` time of the same dict,
  page cache warm (a speed ratio: higher is better);
- re-save: ``trainer.save_checkpoint`` onto an existing name ÷ raw write+fsync of the same bytes to a
  new file (``bench/resave.py``);
- loop: ember.Trainer with ``self.log`` every step (default logger and progress bar) ÷ a hand-written loop;
- stall: a background save's stall (``save(blocking=False)`` + ``snapshot_barrier()``) ÷ one copy of
  the same tensors into reused host buffers;
- import: ``import ember`` after ``import torch``, in fresh processes, and that time ÷ ``import torch``'s
  in the same process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.common import collect, log, now, pairwise_ratios, remove, repo_root, summary


@dataclass
class Figures:
    size_mib: float
    ratios: dict[str, list[float]] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)


def _touch(obj) -> None:
    from bench.load import touch_pages

    touch_pages(obj)


def measure_load(fig: Figures, repeats: int, workdir: Path) -> None:
    from bench.state import make_state
    from ember.checkpoint.io import load_checkpoint, save_checkpoint

    st = make_state(fig.size_mib)
    pt, ck = workdir / "f.pt", workdir / "f.ckpt"
    torch.save(st.ckpt, pt)
    save_checkpoint(st.ckpt, ck)
    del st
    run = {"torch.load": lambda: torch.load(pt, weights_only=True), "ember verify": lambda: load_checkpoint(ck)}
    for method in run:  # page cache warm, allocator warm
        _touch(run[method]())
    for r in range(repeats):
        for method in (list(run) if r % 2 == 0 else list(run)[::-1]):
            collect()
            t0 = now()
            obj = run[method]()
            _touch(obj)
            fig.times.setdefault(f"load {method}", []).append(now() - t0)
            del obj
    fig.ratios["load"] = pairwise_ratios(fig.times["load torch.load"], fig.times["load ember verify"])
    remove(pt)
    remove(ck)


def measure_resave(fig: Figures, repeats: int, workdir: Path) -> None:
    from bench.resave import run_resave

    res = run_resave(fig.size_mib, repeats, workdir / "resave")
    fig.times.update({f"resave {k}": v for k, v in res.times.items()})
    fig.ratios["resave"] = pairwise_ratios(res.times["trainer"], res.times["raw"])


def measure_loop(fig: Figures, repeats: int, workdir: Path, steps: int) -> None:
    from bench.common import quiet
    from bench.loop import make_loader, run_ember, run_vanilla

    torch.set_num_threads(1)
    loader = make_loader(steps)
    with quiet():
        run_vanilla(loader, workdir)
        run_ember(loader, workdir / "w", True)
        for r in range(repeats):
            for method in (("vanilla", "ember") if r % 2 == 0 else ("ember", "vanilla")):
                t0, c0 = now(), time.process_time()
                run_vanilla(loader, workdir) if method == "vanilla" else run_ember(loader, workdir / f"r{r}", True)
                fig.times.setdefault(f"loop {method}", []).append(now() - t0)
                fig.times.setdefault(f"loop cpu {method}", []).append(time.process_time() - c0)
    fig.ratios["loop"] = pairwise_ratios(fig.times["loop ember"], fig.times["loop vanilla"])
    fig.ratios["loop cpu"] = pairwise_ratios(fig.times["loop cpu ember"], fig.times["loop cpu vanilla"])


def measure_stall(fig: Figures, repeats: int, workdir: Path) -> None:
    from bench.state import make_state
    from ember.checkpoint.writer import CheckpointWriter

    st = make_state(fig.size_mib)
    host = [torch.empty_like(t) for t in st.tensors]
    writer = CheckpointWriter()
    path = workdir / "stall.ckpt"
    for r in range(repeats + 1):  # the first of each is a warm-up (buffers allocated, pages touched)
        for method in (("stall", "copy") if r % 2 == 0 else ("copy", "stall")):
            collect()
            t0 = now()
            if method == "copy":
                for h, t in zip(host, st.tensors):
                    h.copy_(t)
            else:
                writer.save(st.ckpt, path, blocking=False, deferred=st.deferred)
                writer.snapshot_barrier()
            dt = now() - t0
            writer.wait()
            os.sync()
            if r:
                fig.times.setdefault(f"stall {method}", []).append(dt)
    fig.ratios["stall"] = pairwise_ratios(fig.times["stall stall"], fig.times["stall copy"])
    remove(path)


def measure_import(fig: Figures, repeats: int) -> None:
    code = ("import time; t0 = time.perf_counter(); import torch; t1 = time.perf_counter(); import ember; "
            "print(t1 - t0, time.perf_counter() - t1)")
    env = {**os.environ, "PYTHONPATH": str(repo_root() / "src")}
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        torch_s, ember_s = map(float, out.stdout.split())
        fig.times.setdefault("import torch", []).append(torch_s)
        fig.times.setdefault("import ember", []).append(ember_s)
    fig.ratios["import"] = pairwise_ratios(fig.times["import ember"], fig.times["import torch"])


def run_figures(size_mib: float, repeats: int, workdir: Path, *, loop_steps: int = 3000) -> Figures:
    workdir.mkdir(parents=True, exist_ok=True)
    fig = Figures(size_mib)
    for name, fn in (("load", lambda: measure_load(fig, repeats, workdir)),
                     ("resave", lambda: measure_resave(fig, repeats, workdir)),
                     ("loop", lambda: measure_loop(fig, repeats, workdir, loop_steps)),
                     ("stall", lambda: measure_stall(fig, repeats, workdir)),
                     ("import", lambda: measure_import(fig, repeats))):
        log(f"figures: {name}")
        fn()
    return fig


ROWS = [  # key, figure, goal, limit or peer, how to read a ratio
    ("load", "`load_checkpoint(verify=True)` speed ÷ `torch.load(weights_only=True)` (warm cache)", "≥ 1.5×",
     "CRC-32C at memory speed on every core; the mapped file needs no copy"),
    ("resave", "`trainer.save_checkpoint` onto an existing name ÷ raw write+fsync to a new file", "≤ 1.05×",
     "raw write (1.00×)"),
    ("loop", "loop with `self.log` every step ÷ hand-written loop", "≤ 1.05×",
     "Lightning 3.45× (BENCHMARKS loop table)"),
    ("loop cpu", "the same, process CPU time", "≤ 1.05×", "less sensitive to other work on the machine"),
    ("stall", "async stall ÷ one copy of the state into reused host buffers", "≤ 1.1×", "the snapshot itself (1.00×)"),
]


def section_figures(fig: Figures) -> str:
    def x(vals: list[float]) -> str:
        lo, mid, hi = summary(vals)
        return f"{lo:.2f} / **{mid:.2f}×** / {hi:.2f}"

    lines = [f"## Issue 19 figures ({fig.size_mib:g} MiB state, one run)", "",
             "| figure | measured (min / median / max) | goal | limit / peer |", "|---|---|---|---|"]
    for key, what, goal, peer in ROWS:
        lines.append(f"| {what} | {x(fig.ratios[key]) if fig.ratios.get(key) else 'not run'} | {goal} | {peer} |")
    imp = fig.times.get("import ember")
    if imp:
        lo, mid, hi = summary(imp)
        lines.append(f"| `import ember` after `import torch` | {lo * 1e3:.0f} / **{mid * 1e3:.0f} ms** / "
                     f"{hi * 1e3:.0f} | "
                     "≤ 100 ms | Lightning adds ~3 s |")
    if fig.ratios.get("import"):
        lines.append(f"| `import ember`'s time ÷ `import torch`'s (same process) | {x(fig.ratios['import'])} | – | "
                     "what ember adds to torch's own import |")
    lines += ["", "Times behind the ratios (min / median / max):", ""]
    for k, v in fig.times.items():
        if not k.startswith("import "):
            lo, mid, hi = summary(v)
            lines.append(f"- {k}: {lo:.3f} / {mid:.3f} / {hi:.3f} s")
    return "\n".join(lines) + "\n"
