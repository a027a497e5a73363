"""Command line: ``python -m bench`` (or ``python bench/run.py``) from the repository root."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import log, now, repo_root  # noqa: E402

ALL = ("save", "load", "loop", "memory", "figures", "metadata")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--sizes", default="64,256,1024,2048",
                   help="checkpoint sizes in MiB of tensor data, comma-separated (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", default=",".join(ALL), help=f"sub-benchmarks to run, from {','.join(ALL)}")
    p.add_argument("--out", default=None, help="report path (default BENCHMARKS.md at the repo root)")
    p.add_argument("--dir", default=None,
                   help="folder for benchmark files; a fresh temp folder is made inside it and removed "
                        "(default: the system temp dir, /tmp, which is on the repo's disk here)")
    p.add_argument("--loop-steps", type=int, default=3000, help="training-loop steps (default %(default)s)")
    p.add_argument("--loop-threads", type=int, default=1,
                   help="torch threads during the loop benchmark, all variants alike (default %(default)s)")
    p.add_argument("--step-ms", type=float, default=75.0,
                   help="simulated training step for the async stall, in ms (default %(default)s)")
    p.add_argument("--data-ms", type=float, default=5.0,
                   help="simulated data loading before each step, in ms: the stand-in for fetching the next "
                        "batch (next(loader)), the training thread waiting without using CPU; ember's "
                        "background copy now overlaps only this and the loop's own work (default %(default)s)")
    p.add_argument("--loop-factor", type=float, default=1.25,
                   help="slowdown loop length as a multiple of the ember sync save time (default %(default)s)")
    p.add_argument("--memory-size", type=float, default=None,
                   help="MiB for the memory benchmark (default: 1024 if in --sizes, else the middle size)")
    p.add_argument("--figures-size", type=float, default=768.0,
                   help="MiB of state for the issue-19 figures (default %(default)s: 805 MB)")
    p.add_argument("--metadata-entries", type=int, default=100_000,
                   help="tensor entries of the sharded metadata checked by --only metadata (default %(default)s)")
    p.add_argument("--plot", default=None, help="plot path (default bench/save_vs_size.png)")
    p.add_argument("--json", default=None, help="also write every raw measurement to this JSON file")
    p.add_argument("--from-json", default=None,
                   help="run nothing: re-render the report (and plot) from a file written by --json")
    p.add_argument("--note", default=None,
                   help="a paragraph for the report, under the command: the conditions of the run (other work "
                        "on the machine, earlier runs); with --from-json it replaces the stored one")
    p.add_argument("--no-drop-caches", action="store_true", help="never drop the page cache (loads are warm)")
    p.add_argument("--no-lightning", action="store_true", help="skip the Lightning columns")
    p.add_argument("--smoke", action="store_true",
                   help="seconds-long check of every code path: 1 MiB, 1 repeat, 10 ms steps, 1 ms data "
                        "loading, 50 loop steps, no memory subprocesses, no plot, no cache dropping "
                        "(with --only save: about 5 s, what the test suite runs)")
    return p.parse_args(argv)


def _from_json(args: argparse.Namespace, out_path: Path, plot_path: Path) -> int:
    from bench.load import LoadResults, LoadSize
    from bench.loop import LoopResults
    from bench.memory import MemoryResults
    from bench.report import render
    from bench.save import SaveResults, SizeResult

    raw = json.loads(Path(args.from_json).read_text())
    sr = lr = lo = mr = None
    plot_note = ""
    if "save" in raw:
        d = raw["save"]
        sr = SaveResults(**{**d, "sizes": [SizeResult(**s) for s in d["sizes"]]})
        if raw.get("smoke"):
            plot_note = "_Plot skipped (--smoke)._"
        else:
            from bench.plot import plot_save

            plot_note = plot_save(sr, plot_path)
    if "load" in raw:
        d = raw["load"]
        lr = LoadResults(**{**d, "sizes": [LoadSize(**s) for s in d["sizes"]]})
    if "loop" in raw:
        lo = LoopResults(**raw["loop"])
    if "memory" in raw:
        mr = MemoryResults(**raw["memory"])
    text = render(machine=raw["machine"], command=raw["command"], smoke=raw.get("smoke", False), sr=sr, lr=lr,
                  lo=lo, mr=mr, memory_skipped=raw.get("memory_skipped"), plot_note=plot_note,
                  elapsed_s=raw.get("elapsed_s"), note=args.note if args.note is not None else raw.get("note"))
    out_path.write_text(text)
    log(f"wrote {out_path} from {args.from_json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return _from_json(args, Path(args.out) if args.out else repo_root() / "BENCHMARKS.md",
                          Path(args.plot) if args.plot else repo_root() / "bench" / "save_vs_size.png")
    raw_argv = sys.argv[1:] if argv is None else argv
    command = "python -m bench" + ("".join(" " + shlex.quote(a) for a in raw_argv))
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in ALL]
    if bad:
        print(f"unknown --only entries {bad}; choose from {ALL}", file=sys.stderr)
        return 2
    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    repeats, loop_steps, step_ms, data_ms = args.repeats, args.loop_steps, args.step_ms, args.data_ms
    drop_caches = not args.no_drop_caches
    if args.smoke:
        from bench import common

        common.COLLECT = False
        sizes, repeats, loop_steps, step_ms, data_ms, drop_caches = [1.0], 1, 50, 10.0, 1.0, False
    use_lightning = not args.no_lightning
    out_path = Path(args.out) if args.out else repo_root() / "BENCHMARKS.md"
    plot_path = Path(args.plot) if args.plot else repo_root() / "bench" / "save_vs_size.png"
    memory_size = args.memory_size
    if memory_size is None:
        memory_size = 1024.0 if 1024.0 in sizes else sorted(sizes)[len(sizes) // 2]

    from bench.machine import machine_info
    from bench.report import render

    base = Path(args.dir) if args.dir else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ember-bench-", dir=base))
    t_start = now()
    sr = lr = lo = mr = None
    memory_skipped = None
    plot_note = ""
    try:
        machine = machine_info(workdir)
        if "save" in only:
            from bench.save import run_save

            sr = run_save(sizes, repeats, workdir / "save", step_ms=step_ms, data_ms=data_ms,
                          loop_factor=args.loop_factor, use_lightning=use_lightning)
            if args.smoke:
                plot_note = "_Plot skipped (--smoke)._"
            else:
                from bench.plot import plot_save

                plot_note = plot_save(sr, plot_path)
        if "load" in only:
            from bench.load import run_load

            lr = run_load(sizes, repeats, workdir / "load", drop_caches=drop_caches)
        if "loop" in only:
            from bench.loop import run_loop

            lo = run_loop(loop_steps, repeats, workdir / "loop", use_lightning=use_lightning,
                          threads=args.loop_threads)
        if "memory" in only:
            if args.smoke:
                memory_skipped = "--smoke runs no memory subprocesses"
            else:
                from bench.memory import run_memory

                mr = run_memory(memory_size, workdir / "memory", use_lightning=use_lightning)
        else:
            memory_skipped = "not selected with --only"
        fig = None
        if "figures" in only:
            from bench.figures import run_figures

            fig = run_figures(1.0 if args.smoke else args.figures_size, repeats, workdir / "figures",
                              loop_steps=loop_steps)
        meta = None
        if "metadata" in only:
            from bench.sharded_metadata import run_metadata

            meta = run_metadata(2000 if args.smoke else args.metadata_entries, repeats, workdir / "metadata",
                                worst=not args.smoke)
        elapsed = now() - t_start
        text = render(machine=machine, command=command, smoke=args.smoke, sr=sr, lr=lr, lo=lo, mr=mr,
                      memory_skipped=memory_skipped, plot_note=plot_note, elapsed_s=elapsed, note=args.note)
        if fig is not None:
            from bench.figures import section_figures

            text += "\n" + section_figures(fig)
        if meta is not None:
            from bench.sharded_metadata import section_metadata

            text += "\n" + section_metadata(meta)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    log(f"wrote {out_path} ({now() - t_start:.0f} s)")
    if args.json:
        raw = {k: dataclasses.asdict(v)
               for k, v in (("save", sr), ("load", lr), ("loop", lo), ("memory", mr), ("figures", fig),
                            ("metadata", meta))
               if v is not None}
        raw.update(machine=machine, command=command, smoke=args.smoke, memory_skipped=memory_skipped,
                   elapsed_s=elapsed, note=args.note)
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
