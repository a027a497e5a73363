"""Load benchmark: torch.load vs safetensors vs ember (verified, and mmap without verification), the
same state written once per format; each load timed with a cold page cache (when it can be dropped)
and again right after with a warm one.

Some loaders are lazy (safetensors' load_file maps the file by default; ember's mmap=True), so every
timed load ends by touching one element of every 4 KiB page of every tensor: all methods pay for
bringing the bytes into memory, and eager loaders pay almost nothing extra (1/1024 of the data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.common import collect, drop_page_cache, fsync_file, log, now, optional_import, remove, rotated
from bench.state import BenchState, make_state

METHODS = ["torch.load", "safetensors", "ember verify", "ember mmap"]
NOTES = {
    "torch.load": "torch.load(path, weights_only=True, mmap=False) of a torch.save file",
    "safetensors": "safetensors.torch.load_file(path) of a save_file file (its default backend maps the file)",
    "ember verify": ("ember load_checkpoint(path, verify=True): maps the file copy-on-write and CRC-checks every byte "
                     "on every core before returning views of the mapping"),
    "ember mmap": "ember load_checkpoint(path, verify=False): maps the tensors lazily; the pages are "
                  "read by the touch that ends every timed load",
    "(all)": "every timed load ends by touching one element per 4 KiB page of every tensor",
}


@dataclass
class LoadSize:
    size_mib: float
    nbytes: int
    cold: dict[str, list[float]] = field(default_factory=dict)
    warm: dict[str, list[float]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadResults:
    sizes: list[LoadSize]
    cold_cache: bool         # True if the page cache was dropped before each cold load
    notes: dict[str, str] = field(default_factory=lambda: dict(NOTES))


def _first_weight(obj, method: str) -> torch.Tensor:
    if method == "safetensors":
        return obj["state_dict.layers.0.weight"]
    return obj["state_dict"]["layers.0.weight"]


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def touch_pages(obj) -> float:
    """Read one element per 4 KiB page of every tensor (forces lazily mapped bytes in)."""
    total = 0.0
    for t in _tensors(obj):
        if t.numel():
            step = max(1, 4096 // t.element_size())
            total += float(t.reshape(-1)[::step].sum())
    return total


def _load(method: str, path: Path):
    if method == "torch.load":
        return torch.load(path, weights_only=True, mmap=False)
    if method == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from ember.checkpoint.io import load_checkpoint

    if method == "ember verify":
        return load_checkpoint(path, verify=True)
    return load_checkpoint(path, verify=False)


def _write_files(st: BenchState, workdir: Path, tag: str, res: LoadSize) -> dict[str, Path]:
    paths = {}
    p = workdir / f"load-{tag}.pt"
    torch.save(st.ckpt, p)
    fsync_file(p)
    paths["torch.load"] = p
    if optional_import("safetensors.torch") is not None:
        from safetensors.torch import save_file

        p = workdir / f"load-{tag}.safetensors"
        save_file(st.flat, str(p))
        fsync_file(p)
        paths["safetensors"] = p
    else:
        res.missing["safetensors"] = "not installed"
    try:
        from ember.checkpoint.io import save_checkpoint

        p = workdir / f"load-{tag}.ckpt"
        save_checkpoint(st.ckpt, p)
        paths["ember verify"] = paths["ember mmap"] = p
    except Exception as e:  # noqa: BLE001
        res.missing["ember verify"] = res.missing["ember mmap"] = f"failed to save: {type(e).__name__}: {e}"
    return paths


def run_load(sizes_mib: list[float], repeats: int, workdir: Path, *, drop_caches: bool = True) -> LoadResults:
    workdir.mkdir(parents=True, exist_ok=True)
    cold = drop_caches and drop_page_cache()
    if drop_caches and not cold:
        log("load: cannot drop the page cache (not root?); every load is warm")
    out = LoadResults(sizes=[], cold_cache=cold)
    for size in sizes_mib:
        st = make_state(size)
        res = LoadSize(size_mib=size, nbytes=st.nbytes)
        out.sizes.append(res)
        tag = f"{size:g}MiB"
        expect = _first_weight(st.ckpt, "torch.load").clone()
        paths = _write_files(st, workdir, tag, res)
        del st
        collect()
        log(f"load: {tag}, page cache {'dropped before each cold load' if cold else 'warm'}")
        try:
            for r in range(repeats):
                for method in rotated(METHODS, r):
                    if method in res.missing:
                        continue
                    try:
                        for kind in ("cold", "warm"):
                            if kind == "cold" and cold:
                                drop_page_cache()
                            collect()
                            t0 = now()
                            obj = _load(method, paths[method])
                            touch_pages(obj)
                            dt = now() - t0
                            if not torch.equal(_first_weight(obj, method), expect):
                                raise AssertionError("loaded tensor differs from the saved one")
                            del obj
                            getattr(res, kind).setdefault(method, []).append(dt)
                        log(f"  r{r} {method:14s} cold {res.cold[method][-1]:8.3f} s  "
                            f"warm {res.warm[method][-1]:8.3f} s")
                    except Exception as e:  # noqa: BLE001
                        res.missing[method] = f"failed: {type(e).__name__}: {e}"
                        log(f"  {method} FAILED: {res.missing[method]}")
        finally:
            for p in set(paths.values()):
                remove(p)
    return out
