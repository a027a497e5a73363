"""BENCHMARKS.md: machine, command, one table per benchmark (ratios measured side by side, with
min / median / max over repeats, absolute medians alongside) and the goals, computed."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.common import MiB, pairwise_ratios, summary

HEADINGS = {
    "save": "## Save: sync save time vs raw write",
    "stall": "## Async save: training stall",
    "slowdown": "## Async save: training-loop slowdown",
    "load": "## Load",
    "loop": "## Training loop overhead",
    "memory": "## Peak memory during a save",
    "goals": "## Goals",
}


# ----------------------------------------------------------------------------- formatting

def fmt_s(s: float | None) -> str:
    if s is None:
        return "–"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_x(x: float) -> str:
    return f"{x:.3f}" if x < 0.1 else f"{x:.2f}"


def fmt_ratios(values: list[float]) -> str:
    if not values:
        return "–"
    lo, med, hi = summary(values)
    return f"{fmt_x(lo)} / **{fmt_x(med)}×** / {fmt_x(hi)}"


def fmt_size(size_mib: float, nbytes: int) -> str:
    return f"{size_mib:g} MiB ({nbytes:,} B)"


def median(values) -> float | None:
    vals = [v for v in (values or []) if v is not None]
    return statistics.median(vals) if vals else None


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def notes_list(notes: dict[str, str]) -> str:
    return "\n".join(f"- **{k}**: {v}" for k, v in notes.items())


def _missing_row(width: int, first: list[str], why: str) -> list[str]:
    return first + [why] + ["–"] * (width - len(first) - 1)


# ----------------------------------------------------------------------------- sections

def section_save(sr) -> str:
    from bench.save import ASYNC, SYNC

    out = [HEADINGS["save"], ""]
    if sr is None:
        return "\n".join(out + ["Not run (not selected with --only).", ""])
    out.append("Each repeat writes every method's file (new name, same folder, deleted and `sync`ed after "
               "each measurement; method order rotated per repeat). Ratio = method time ÷ raw time **of the "
               "same repeat**; min / median / max over repeats.")
    out.append("")
    header = ["Size", "Method", "× raw (min / median / max)", "median time", "median MB/s", "file bytes"]
    rows = []
    for r in sr.sizes:
        raw = r.save.get("raw")
        for m in SYNC:
            if m in r.missing and m not in r.save:
                rows.append(_missing_row(len(header), [fmt_size(r.size_mib, r.nbytes), m], r.missing[m]))
                continue
            t = r.save.get(m, [])
            med = median(t)
            note = f" ({r.missing[m]})" if m in r.missing else ""
            rows.append([fmt_size(r.size_mib, r.nbytes), m + note, fmt_ratios(pairwise_ratios(t, raw or [])),
                         fmt_s(med), f"{r.nbytes / med / 1e6:.0f}" if med else "–",
                         f"{r.file_bytes.get(m, 0):,}"])
    out += [table(header, rows), "", notes_list(sr.notes), ""]

    out += [HEADINGS["stall"], ""]
    out.append(f"Stall = time the training thread is blocked. ember: time in `CheckpointWriter.save(..., "
               f"blocking=False, deferred=<all tensors>)` + time in `snapshot_barrier()` called right after "
               f"one simulated training step ({sr.step_reps} × 1024×1024 float32 matmul = "
               f"{fmt_s(sr.step_s)} alone, on the training thread). Lightning: time in "
               f"`AsyncCheckpointIO(TorchCheckpointIO()).save_checkpoint` (it clones every tensor on the "
               f"caller). Ratio = stall ÷ the same library's sync save of the same repeat. The stall does not "
               f"count the training step being slowed by the writer thread competing for the cores (see "
               f"'step during save', and the next table).")
    out.append("")
    header = ["Size", "Method", "stall ÷ own sync save (min / median / max)", "median stall",
              "median save() call / barrier", "median step during save", "median commit, after the step"]
    rows = []
    for r in sr.sizes:
        for m in ASYNC:
            ref = "ember" if m.startswith("ember") else "Lightning"
            if m not in r.stall:
                rows.append(_missing_row(len(header), [fmt_size(r.size_mib, r.nbytes), m],
                                         r.missing.get(m, "not run")))
                continue
            p = r.parts.get(m, {})
            note = f" ({r.missing[m]})" if m in r.missing else ""
            rows.append([fmt_size(r.size_mib, r.nbytes), m + note,
                         fmt_ratios(pairwise_ratios(r.stall[m], r.save.get(ref, []))), fmt_s(median(r.stall[m])),
                         f"{fmt_s(median(p.get('call')))} / {fmt_s(median(p.get('barrier')))}",
                         fmt_s(median(p.get("step"))), fmt_s(median(p.get("commit")))])
    out += [table(header, rows), ""]

    out += [HEADINGS["slowdown"], ""]
    out.append(f"A loop of N simulated training steps (N = ⌈{sr.loop_factor:g} × this repeat's ember sync save "
               f"time ÷ step time⌉, at least 10) without a save, and with one async save started before the "
               f"first step (ember: `snapshot_barrier()` after every step, as the trainer does before "
               f"each optimizer step). Time runs until the file is committed (`wait()` / `teardown()`), so a save that outlasts "
               f"the loop is charged in full. The writer thread competes with the training thread for the cores. "
               f"Extra = loop with save − loop without, ÷ the same library's sync save time (1.0 = no better than "
               f"saving synchronously; 0 = free).")
    out.append("")
    header = ["Size", "Save during loop", "N steps (median)", "loop ÷ loop without save (min / median / max)",
              "median loop time", "extra ÷ own sync save (min / median / max)", "median wait after loop"]
    rows = []
    for r in sr.sizes:
        base = r.loop.get("none", [])
        n = median(r.loop_steps)
        rows.append([fmt_size(r.size_mib, r.nbytes), "none", f"{n:g}" if n else "–", "1 (reference)",
                     fmt_s(median(base)), "–", "–"])
        for m in ASYNC:
            if m not in r.loop:
                rows.append(_missing_row(len(header), [fmt_size(r.size_mib, r.nbytes), m], r.missing.get(m, "not run")))
                continue
            ref = "ember" if m.startswith("ember") else "Lightning"
            extra = [(w - b) for w, b in zip(r.loop[m], base)]
            rows.append([fmt_size(r.size_mib, r.nbytes), m, f"{n:g}", fmt_ratios(pairwise_ratios(r.loop[m], base)),
                         fmt_s(median(r.loop[m])), fmt_ratios(pairwise_ratios(extra, r.save.get(ref, []))),
                         fmt_s(median(r.loop_tail.get(m)))])
    out += [table(header, rows), ""]
    return "\n".join(out)


def section_load(lr) -> str:
    from bench.load import METHODS

    out = [HEADINGS["load"], ""]
    if lr is None:
        return "\n".join(out + ["Not run (not selected with --only).", ""])
    if lr.cold_cache:
        out.append("**Page cache: cold** — `sync; echo 3 > /proc/sys/vm/drop_caches` before each *cold* load "
                   "(it worked); the *warm* load repeats it right after with the file cached.")
    else:
        out.append("**Page cache: warm** — the cache was not dropped (not allowed, or --no-drop-caches / "
                   "--smoke); both columns read from a warm cache.")
    out.append("Files written once per size; each timed load ends by touching one element per 4 KiB page of "
               "every tensor, so lazy (mmap) loaders pay for reading too. Ratio = load time ÷ torch.load time of "
               "the same repeat; every load is checked against the saved tensor.")
    out.append("")
    header = ["Size", "Method", "cold ÷ torch.load (min / median / max)", "median cold",
              "warm ÷ torch.load (min / median / max)", "median warm"]
    rows = []
    for r in lr.sizes:
        for m in METHODS:
            if m not in r.cold:
                rows.append(_missing_row(len(header), [fmt_size(r.size_mib, r.nbytes), m], r.missing.get(m, "not run")))
                continue
            note = f" ({r.missing[m]})" if m in r.missing else ""
            rows.append([fmt_size(r.size_mib, r.nbytes), m + note,
                         fmt_ratios(pairwise_ratios(r.cold[m], r.cold.get("torch.load", []))), fmt_s(median(r.cold[m])),
                         fmt_ratios(pairwise_ratios(r.warm.get(m, []), r.warm.get("torch.load", []))),
                         fmt_s(median(r.warm.get(m)))])
    out += [table(header, rows), "", notes_list(lr.notes), ""]
    return "\n".join(out)


def section_loop(lo) -> str:
    from bench.loop import BATCH, METHODS

    out = [HEADINGS["loop"], ""]
    if lo is None:
        return "\n".join(out + ["Not run (not selected with --only).", ""])
    out.append(f"MLP 32→64→2, batch {BATCH}, Adam, one epoch of {lo.steps} steps over the same "
               f"TensorDataset/DataLoader (random data, no shuffle), torch.set_num_threads({lo.threads}) for every "
               f"variant (see `--loop-threads`). Each time covers building the trainer "
               f"and fit(); stdout/stderr go to /dev/null for every variant (progress bars render to a "
               f"non-TTY). One warm-up run of each first. Lightning's default logger here: "
               f"{lo.lightning_logger or 'n/a'}. Ratio = time ÷ vanilla time of the same repeat.")
    out.append("")
    header = ["Method", "÷ vanilla (min / median / max)", "median time", "median per step"]
    rows = []
    for m in METHODS:
        if m not in lo.times:
            rows.append(_missing_row(len(header), [m], lo.missing.get(m, "not run")))
            continue
        med = median(lo.times[m])
        rows.append([m, fmt_ratios(pairwise_ratios(lo.times[m], lo.times.get("vanilla", []))), fmt_s(med),
                     fmt_s(med / lo.steps)])
    out += [table(header, rows), "", notes_list(lo.notes), ""]
    return "\n".join(out)


def section_memory(mr, skipped_reason: str | None) -> str:
    from bench.memory import METHODS

    out = [HEADINGS["memory"], ""]
    if mr is None:
        return "\n".join(out + [f"Not run ({skipped_reason or 'not selected'}).", ""])
    out.append(f"One save of {fmt_size(mr.size_mib, mr.nbytes)} per method, each in a fresh process: build the "
               f"state, read VmRSS, reset the high-water mark (`echo 5 > /proc/self/clear_refs`; reset "
               f"{'verified' if mr.hwm_reset_ok else '**did not work** — numbers include the state build'}), "
               f"save (async: until committed), read VmHWM. Extra = VmHWM − VmRSS before the save; page cache "
               f"not included. One run per method (no repeats).")
    out.append("")
    header = ["Method", "extra peak RSS", "÷ checkpoint size"]
    rows = []
    for m in METHODS:
        if m not in mr.extra:
            rows.append(_missing_row(len(header), [m], mr.missing.get(m, "not run")))
            continue
        e = mr.extra[m]
        rows.append([m, f"{e / MiB:.1f} MiB", f"{e / mr.nbytes:.3f}×" if mr.nbytes else "–"])
    out += [table(header, rows), "", notes_list(mr.notes), ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- goals

@dataclass
class Goal:
    name: str
    target: str
    measured: str
    met: bool | None  # None: not measured


def _worst_over_sizes(sizes, values_of, threshold: float, unit: str = "×") -> tuple[str, bool | None]:
    per = []
    for r in sizes:
        vals = values_of(r)
        if vals:
            per.append((statistics.median(vals), r.size_mib))
    if not per:
        return "not measured", None
    worst = max(per)
    detail = ", ".join(f"{m:.3f}{unit} @ {s:g} MiB" for m, s in per)
    return f"worst median **{worst[0]:.3f}{unit}** ({detail})", worst[0] <= threshold


def compute_goals(sr, lr, lo, mr) -> list[Goal]:
    goals = []
    if sr is not None:
        m, ok = _worst_over_sizes(sr.sizes, lambda r: pairwise_ratios(r.save.get("ember", []), r.save.get("raw", [])), 1.10)
        goals.append(Goal("ember sync save ÷ raw write+fsync", "≤ 1.10×", m, ok))
        m, ok = _worst_over_sizes(sr.sizes, lambda r: pairwise_ratios(r.stall.get("ember async", []),
                                                                     r.save.get("ember", [])), 0.05)
        goals.append(Goal("ember async stall ÷ ember sync save", "≤ 0.05×", m, ok))
    else:
        goals += [Goal("ember sync save ÷ raw write+fsync", "≤ 1.10×", "not run", None),
                  Goal("ember async stall ÷ ember sync save", "≤ 0.05×", "not run", None)]
    if lr is not None:
        cache = "cold" if lr.cold_cache else "warm"
        m, ok = _worst_over_sizes(lr.sizes, lambda r: pairwise_ratios(r.cold.get("ember verify", []),
                                                                     r.cold.get("torch.load", [])), 1.0)
        goals.append(Goal(f"ember verified load ÷ torch.load ({cache} cache)", "≤ 1.00×", m, ok))
        if lr.cold_cache:
            m, ok = _worst_over_sizes(lr.sizes, lambda r: pairwise_ratios(r.warm.get("ember verify", []),
                                                                         r.warm.get("torch.load", [])), 1.0)
            goals.append(Goal("ember verified load ÷ torch.load (warm cache)", "≤ 1.00×", m, ok))
    else:
        goals.append(Goal("ember verified load ÷ torch.load", "≤ 1.00×", "not run", None))
    if lo is not None and lo.times.get("ember") and lo.times.get("vanilla"):
        med = statistics.median(pairwise_ratios(lo.times["ember"], lo.times["vanilla"]))
        goals.append(Goal("ember.Trainer loop ÷ vanilla loop", "≤ 1.10×", f"median **{med:.3f}×**", med <= 1.10))
    else:
        goals.append(Goal("ember.Trainer loop ÷ vanilla loop", "≤ 1.10×",
                          "not run" if lo is None else lo.missing.get("ember", "not measured"), None))
    for m, target, limit in (("ember", "≤ 0.10× checkpoint size (buffers, not a copy)", 0.10),
                             ("ember async", "≤ 1.10× checkpoint size (one host copy)", 1.10)):
        if mr is None:
            goals.append(Goal(f"{m} save: extra peak RSS", target, "not run", None))
        elif m in mr.extra and mr.nbytes:
            x = mr.extra[m] / mr.nbytes
            goals.append(Goal(f"{m} save: extra peak RSS", target,
                              f"**{x:.3f}×** ({mr.extra[m] / MiB:.0f} MiB of {mr.nbytes / MiB:.0f} MiB)", x <= limit))
        else:
            goals.append(Goal(f"{m} save: extra peak RSS", target, mr.missing.get(m, "not measured"), None))
    return goals


def section_goals(goals: list[Goal], smoke: bool) -> str:
    out = [HEADINGS["goals"], ""]
    out.append("Computed from the tables above (median of per-repeat ratios; for save/load the worst size). "
               "The memory thresholds are this benchmark's reading of ember's goals (sync: bounded by "
               "buffers; async: one host copy).")
    if smoke:
        out.append("**Smoke run: sizes and step counts are tiny, so these verdicts mean nothing.**")
    out.append("")
    verdict = {True: "met", False: "**not met**", None: "not measured"}
    out.append(table(["Goal", "Target", "Measured", "Verdict"],
                     [[g.name, g.target, g.measured, verdict[g.met]] for g in goals]))
    out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- whole report

def render(*, machine: dict[str, str], command: str, smoke: bool, sr, lr, lo, mr, memory_skipped: str | None,
           plot_note: str, elapsed_s: float | None) -> str:
    parts = ["# ember benchmarks", ""]
    parts.append("Generated by `bench/` — every number is a ratio measured side by side in the same run "
                 "(min / median / max over repeats), because the machine is shared and noisy. Absolute times "
                 "are secondary. Timings are never asserted by tests.")
    parts.append("")
    parts.append("## Machine and command")
    parts.append("")
    parts.append(table(["", ""], [[k, v] for k, v in machine.items()]))
    parts.append("")
    took = f" (took {elapsed_s:.0f} s)" if elapsed_s is not None else ""
    parts.append(f"Command: `{command}`{took}")
    if smoke:
        parts.append("")
        parts.append("**This is a `--smoke` run (tiny sizes, 1 repeat): it checks that the code paths run; "
                     "its numbers are not benchmarks.**")
    parts.append("")
    parts.append(section_save(sr))
    if plot_note:
        parts.append(plot_note)
        parts.append("")
    parts.append(section_load(lr))
    parts.append(section_loop(lo))
    parts.append(section_memory(mr, memory_skipped))
    parts.append(section_goals(compute_goals(sr, lr, lo, mr), smoke))
    parts.append(READING)
    return "\n".join(parts)


READING = """
## Reading the results

- **Async stall.** ember's loop pauses for the JSON tree and the small tensors only; parameters and
  optimizer state are copied to host buffers by the writer thread while the next step runs, and the
  optimizer step waits (helping with the copy) until that copy is done. The stall is therefore the part
  of the host copy that one step does not cover. The copy runs at the machine's memory bandwidth (both
  cores copying); when the whole state takes longer to copy than one training step, the difference
  shows up as stall — with the 75 ms stand-in step that happens at 2 GiB here. A real model whose
  weights and Adam state fill 2 GiB takes far longer than 75 ms per step on two cores, and on a GPU
  the copy is a device-to-pinned-host transfer on its own stream.
- **Loop slowdown.** On two cores the writer thread (copy, checksum, write syscalls) competes with
  training for the CPU, so a loop with a save in flight runs slower than one without, though less than
  it would with a synchronous save (extra ÷ sync save < 1). Lightning's async save is slower still.
- **Loads** are noisy on this shared disk (see min/max); ember reads each tensor into its own
  allocation while a second thread checks the CRC-32C of each piece just read, then helps finish.
"""
