"""Memory benchmark: peak extra resident memory of one save, each method in a fresh process.

The child builds the state, reads VmRSS, resets the high-water mark (``echo 5 > /proc/self/clear_refs``,
checked: VmHWM must drop back to about VmRSS), saves (and, for async saves, waits for the commit),
then reads VmHWM. Extra = VmHWM - VmRSS before the save. Page cache is not resident memory of the
process and is not counted.

Child entry point: ``python -m bench.memory METHOD SIZE_MIB DIR`` prints one JSON line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import MiB, lightning_available, log, optional_import, remove, repo_root

METHODS = ["raw", "torch.save", "safetensors", "Lightning", "Lightning async", "ember", "ember async"]
NOTES = {
    "ember async": "CheckpointWriter().save(..., blocking=False, deferred=all tensors), 5 ms of simulated "
                   "data loading, snapshot_barrier(), one simulated step, wait() (as the trainer runs it now)",
    "Lightning async": "AsyncCheckpointIO(TorchCheckpointIO()).save_checkpoint then teardown()",
}


@dataclass
class MemoryResults:
    size_mib: float
    nbytes: int = 0
    extra: dict[str, float] = field(default_factory=dict)   # method -> extra bytes at peak
    missing: dict[str, str] = field(default_factory=dict)
    hwm_reset_ok: bool = True
    notes: dict[str, str] = field(default_factory=lambda: dict(NOTES))


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field_name}:\s+(\d+)\s+kB", f.read(), re.M)
    return int(m.group(1)) if m else -1


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS. True if it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") <= _status_kib("VmRSS") + 4 * 1024


def child(method: str, size_mib: float, workdir: Path) -> dict:
    import gc

    from bench.save import EMBER_NOW, STALL_FN, SYNC_FN
    from bench.state import TrainingStep, make_state

    st = make_state(size_mib)
    step = TrainingStep(20.0) if method.endswith("async") else None
    writer = None
    if method == "ember async":
        from ember.checkpoint.writer import CheckpointWriter

        writer = CheckpointWriter()
    gc.collect()
    path = workdir / f"mem-{method.replace(' ', '-').replace('.', '_')}-{os.getpid()}.ckpt"
    rss0 = _status_kib("VmRSS")
    ok = reset_hwm()
    try:
        if method in SYNC_FN:
            SYNC_FN[method](st, path)
        else:
            STALL_FN[EMBER_NOW if method == "ember async" else method](st, path, writer, step, 0.005)
        hwm = _status_kib("VmHWM")
    finally:
        remove(path)
    return {"method": method, "nbytes": st.nbytes, "rss_before_kib": rss0, "hwm_kib": hwm,
            "extra_bytes": (hwm - rss0) * 1024, "hwm_reset_ok": ok}


def run_memory(size_mib: float, workdir: Path, *, use_lightning: bool = True, timeout_s: float = 600) -> MemoryResults:
    out = MemoryResults(size_mib=size_mib)
    workdir.mkdir(parents=True, exist_ok=True)
    have_lightning = lightning_available(use_lightning)
    for method in METHODS:
        if method.startswith("Lightning") and not have_lightning:
            out.missing[method] = "not installed" if use_lightning else "disabled (--no-lightning)"
            continue
        if method == "safetensors" and optional_import("safetensors.torch") is None:
            out.missing[method] = "not installed"
            continue
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(repo_root())] + [p for p in [env.get("PYTHONPATH")] if p])
        proc = subprocess.run([sys.executable, "-m", "bench.memory", method, str(size_mib), str(workdir)],
                              cwd=repo_root(), env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            out.missing[method] = f"failed (exit {proc.returncode}): {tail[:200]}"
            log(f"memory: {method} FAILED: {out.missing[method]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out.nbytes = r["nbytes"]
        out.extra[method] = r["extra_bytes"]
        out.hwm_reset_ok = out.hwm_reset_ok and r["hwm_reset_ok"]
        log(f"memory: {method:16s} extra {r['extra_bytes'] / MiB:9.1f} MiB "
            f"({r['extra_bytes'] / r['nbytes']:.2f}x of {r['nbytes'] / MiB:.0f} MiB)")
    return out


if __name__ == "__main__":
    _method, _size, _dir = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
    print(json.dumps(child(_method, _size, _dir)))
