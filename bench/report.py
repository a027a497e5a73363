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
    data = fmt_s(sr.data_s) if sr.data_s else "no"
    out.append(f"Stall = time the training thread is blocked. Both ember rows run on the same states, with the "
               f"same writer (its host buffers allocated by one untimed save first, as a trainer reuses them), "
               f"and call `CheckpointWriter.save(..., blocking=False, deferred=<all tensors>)`, then simulate "
               f"loading the next batch ({data}: `time.sleep`, the training thread waiting for DataLoader "
               f"workers, see `--data-ms`). **now**: then `snapshot_barrier()`, as the trainer calls it before "
               f"any user code (hooks, training_step), so the host copy overlaps only data loading and the "
               f"loop's own work; then one simulated training step. **previous**: then one simulated training "
               f"step, then `snapshot_barrier()` (the earlier design, barrier before the optimizer step: the copy "
               f"also overlapped forward and backward, and an in-place edit by user code could reach the "
               f"snapshot). Stall = time in save() + time in the barrier. Training step = {sr.step_reps} × "
               f"1024×1024 float32 matmul = {fmt_s(sr.step_s)} alone, on the training thread. Lightning: time in "
               f"`AsyncCheckpointIO(TorchCheckpointIO()).save_checkpoint` (it clones every tensor on the "
               f"caller), then the same data loading and step. Ratios are per repeat, against the same library's "
               f"sync save and against Lightning's async stall of the same repeat. The stall does not count the "
               f"training step being slowed by the writer thread competing for the cores: 'step' is the "
               f"simulated step's time with the save in flight (previous and Lightning: during the copy; now: "
               f"after the barrier, while the writer checksums and writes); see also the next table.")
    out.append("")
    header = ["Size", "Method", "stall ÷ own sync save (min / median / max)",
              "stall ÷ Lightning async stall (min / median / max)", "median stall",
              "median save() call / barrier", "median step", "median commit, after the step"]
    rows = []
    for r in sr.sizes:
        for m in ASYNC:
            ref = "Lightning" if m.startswith("Lightning") else "ember"
            if m not in r.stall:
                rows.append(_missing_row(len(header), [fmt_size(r.size_mib, r.nbytes), m],
                                         r.missing.get(m, "not run")))
                continue
            p = r.parts.get(m, {})
            note = f" ({r.missing[m]})" if m in r.missing else ""
            vs_lightning = ("1 (reference)" if m.startswith("Lightning")
                            else fmt_ratios(pairwise_ratios(r.stall[m], r.stall.get("Lightning async", []))))
            rows.append([fmt_size(r.size_mib, r.nbytes), m + note,
                         fmt_ratios(pairwise_ratios(r.stall[m], r.save.get(ref, []))), vs_lightning,
                         fmt_s(median(r.stall[m])),
                         f"{fmt_s(median(p.get('call')))} / {fmt_s(median(p.get('barrier')))}",
                         fmt_s(median(p.get("step"))), fmt_s(median(p.get("commit")))])
    out += [table(header, rows), ""]

    out += [HEADINGS["slowdown"], ""]
    out.append(f"A loop of N simulated training steps, each after loading its batch ({data}; N = "
               f"⌈{sr.loop_factor:g} × this repeat's ember sync save time ÷ step time⌉, at least 10), without a "
               f"save, and with one async save started before the first step. ember **now**: "
               f"`snapshot_barrier()` after loading each batch, before the step, as the trainer calls it before "
               f"each step's user code; ember **previous**: `snapshot_barrier()` after each step (the earlier "
               f"design, before each optimizer step). Time runs until the file is committed (`wait()` / "
               f"`teardown()`), so a save that outlasts the loop is charged in full. The writer thread competes "
               f"with the training thread for the cores. Extra = loop with save − loop without, ÷ the same "
               f"library's sync save time (1.0 = no better than saving synchronously; 0 = free).")
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
            ref = "Lightning" if m.startswith("Lightning") else "ember"
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
    met: bool | str | None  # None: not measured; a string: shown as is (a row for comparison, no target)


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
        m, ok = _worst_over_sizes(sr.sizes, lambda r: pairwise_ratios(r.save.get("ember", []), r.save.get("raw", [])),
                                  1.10)
        goals.append(Goal("ember sync save ÷ raw write+fsync", "≤ 1.10×", m, ok))
        from bench.save import EMBER_NOW, EMBER_PREV

        m, ok = _worst_over_sizes(sr.sizes, lambda r: pairwise_ratios(r.stall.get(EMBER_NOW, []),
                                                                     r.save.get("ember", [])), 0.05)
        goals.append(Goal("ember async stall ÷ ember sync save (now: barrier before user code)", "≤ 0.05×", m, ok))
        m, _ = _worst_over_sizes(sr.sizes, lambda r: pairwise_ratios(r.stall.get(EMBER_PREV, []),
                                                                    r.save.get("ember", [])), 0.05)
        goals.append(Goal("the same, previous design (barrier before the optimizer step)", "–", m,
                          "for comparison: no longer used (it let in-place edits tear a save)"))
        m, _ = _worst_over_sizes(sr.sizes, lambda r: pairwise_ratios(r.stall.get(EMBER_NOW, []),
                                                                    r.stall.get("Lightning async", [])), 1.0)
        goals.append(Goal("ember async stall (now) ÷ Lightning async stall", "–", m, "for comparison"))
    else:
        goals += [Goal("ember sync save ÷ raw write+fsync", "≤ 1.10×", "not run", None),
                  Goal("ember async stall ÷ ember sync save (now: barrier before user code)", "≤ 0.05×", "not run",
                       None)]
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
    out.append("")
    out.append("Correctness comes first: a background save must hold the state of one moment, whatever user "
               "code does between steps (`p.data.clamp_()` in training_step, the WGAN idiom, used to reach "
               "the snapshot of the previous design). So the trainer now waits for the host copy before any "
               "user code runs, and the copy overlaps only data loading and the loop's own work. The async "
               "stall target (≤ 0.05× of a sync save) was set for the previous design; the stall of the "
               "current one is measured against it, and the previous design's and Lightning's are shown "
               "beside it for comparison, not as goals.")
    if smoke:
        out.append("")
        out.append("**Smoke run: sizes and step counts are tiny, so these verdicts mean nothing.**")
    out.append("")
    verdict = {True: "met", False: "**not met**", None: "not measured"}
    out.append(table(["Goal", "Target", "Measured", "Verdict"],
                     [[g.name, g.target, g.measured, g.met if isinstance(g.met, str) else verdict[g.met]]
                      for g in goals]))
    out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- whole report

def render(*, machine: dict[str, str], command: str, smoke: bool, sr, lr, lo, mr, memory_skipped: str | None,
           plot_note: str, elapsed_s: float | None, note: str | None = None) -> str:
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
    if note:
        parts.append("")
        parts.append(note)
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

- **Async stall.** ember's `save()` pauses the loop for the JSON tree and the small tensors only; the
  parameters and optimizer state are copied into reused host buffers by the writer thread, and the
  trainer waits for that copy (copying too while it waits) before any user code of the next step runs:
  every hook, `training_step`, validation. The stall is therefore the part of the host copy that data
  loading and the loop's own work do not cover; with a short data-loading time it is nearly the whole
  copy, which runs at memory speed (both cores copying) and grows with the checkpoint. The previous
  design also hid the copy behind the next forward and backward, so it stalled less, but user code that
  edits weights in place (`p.data.clamp_()`) could reach the snapshot and tear the file: correctness
  first. Lightning's async save clones every tensor on the caller before returning.
- **What the stand-ins leave out.** Data loading here is a sleep (the training thread waiting for
  DataLoader workers, which use no core in this benchmark); real workers compete for the cores, and a
  loader without workers keeps the training thread busy instead. When a save is made at a step's end
  and the module or a callback after `ModelCheckpoint` defines `on_train_batch_end`, the barrier comes
  before that hook, with nothing to overlap. Saves at an epoch's end overlap the next epoch's iterator
  start-up (worker launch) as well.
- **Loop slowdown.** On two cores the writer thread (copy, checksum, write syscalls) competes with
  training for the CPU, so a loop with a save in flight runs slower than one without, though less than
  it would with a synchronous save (extra ÷ sync save < 1). Compare the now and previous rows of the
  same size for what the barrier's position costs over a whole save.
- **Loads** are noisy on this shared disk (see min/max); ember maps a local file copy-on-write and
  checks the CRC-32C of the mapped bytes on every core before handing out views of the mapping (URLs,
  and `mmap=False`, read each tensor into its own allocation while a second thread checks each piece).
"""
