"""What the benchmark ran on: CPU, cores, RAM, disk and filesystem of the target folder, versions."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

from bench.common import repo_root, version_of


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _mount_of(path: Path) -> tuple[str, str, str]:
    """(device, filesystem type, mount point) holding ``path``."""
    best = ("unknown", "unknown", "")
    try:
        real = str(path.resolve())
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, fstype = line.split()[:3]
                mnt = mnt.replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[2]):
                    best = (dev, fstype, mnt)
    except OSError:
        pass
    return best


def _rotational(dev: str) -> str:
    name = os.path.basename(dev)
    for cand in (name, name.rstrip("0123456789")):
        p = Path(f"/sys/block/{cand}/queue/rotational")
        if p.exists():
            return "rotational=1 (as reported; virtual disks often say so)" if p.read_text().strip() == "1" \
                else "non-rotational"
    return "unknown"


def _git() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo_root(), capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=repo_root(),
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{rev}{' + uncommitted changes in src/' if dirty else ''}" if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info(target_dir: Path) -> dict[str, str]:
    import torch

    dev, fstype, mnt = _mount_of(target_dir)
    return {
        "Date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPU": _cpu_model(),
        "Cores (os.cpu_count)": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "RAM": _ram_gib(),
        "Target folder": f"{target_dir} on {dev} ({fstype}, mounted at {mnt}, {_rotational(dev)})",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "torch": torch.__version__,
        "ember": f"{version_of('ember-train')} (git {_git()})",
        "lightning": (version_of("lightning") if version_of("lightning") != "not installed"
                      else f"pytorch-lightning {version_of('pytorch-lightning')}"),
        "safetensors": version_of("safetensors"),
    }
