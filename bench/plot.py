"""bench/save_vs_size.png: save time and training stall against checkpoint size, per method."""

from __future__ import annotations

from pathlib import Path

from bench.common import MiB, optional_import, summary


def _series(sizes, get):
    xs, med, lo, hi = [], [], [], []
    for r in sizes:
        vals = get(r)
        if vals:
            a, b, c = summary(vals)
            xs.append(r.nbytes / MiB)
            lo.append(b - a)
            med.append(b)
            hi.append(c - b)
    return xs, med, lo, hi


COLORS = {"raw": "tab:gray", "torch.save": "tab:orange", "safetensors": "tab:green", "Lightning": "tab:red",
          "ember": "tab:blue", "Lightning async": "tab:red", "ember async (now)": "tab:blue",
          "ember async (previous)": "tab:purple"}


def plot_save(sr, path: Path) -> str:
    """Write the plot; returns a line for the report (what was written, or why not)."""
    if optional_import("matplotlib") is None:
        return "_Plot skipped: matplotlib is not installed._"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.save import EMBER_NOW, EMBER_PREV, LIGHTNING_ASYNC, SYNC

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for m in SYNC:
        xs, med, lo, hi = _series(sr.sizes, lambda r, m=m: r.save.get(m))
        if xs:
            ax1.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3, label=m, color=COLORS[m])
    ax1.set(title="Sync save time (median, min–max)", xlabel="checkpoint size (MiB of tensors)",
            ylabel="seconds", xscale="log", yscale="log")
    ax1.legend(fontsize=8)
    for m, label in ((LIGHTNING_ASYNC, "Lightning async"), (EMBER_NOW, "ember async (now)"),
                     (EMBER_PREV, "ember async (previous)")):
        xs, med, lo, hi = _series(sr.sizes, lambda r, m=m: r.stall.get(m))
        if xs:
            ax2.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3, label=f"{label} stall", color=COLORS[label],
                         linestyle=":" if m == EMBER_PREV else "-")
    for m in ("ember", "Lightning"):
        xs, med, _, _ = _series(sr.sizes, lambda r, m=m: r.save.get(m))
        if xs:
            ax2.plot(xs, med, linestyle="--", alpha=0.6, label=f"{m} sync save (reference)", color=COLORS[m])
    ax2.set(title=f"Training stall of one async save (data {sr.data_s * 1e3:g} ms, step {sr.step_s * 1e3:.0f} ms)",
            xlabel="checkpoint size (MiB of tensors)", ylabel="seconds", xscale="log", yscale="log")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"Plot: `{path.name}` (save time and stall against size), written to `{path}`."
