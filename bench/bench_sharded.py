"""Sharded save and load on 2 gloo ranks: ember's ``save_sharded``/``load_sharded`` against DCP's own
``FileSystemWriter``/``FileSystemReader`` on the same DTensor state, and a raw write (+fsync) / read of
the same bytes, side by side in one run.

    python -m bench.bench_sharded            # ~1 GiB state (512 MiB per rank), 3 repeats
    python -m bench.bench_sharded --small    # 64 MiB smoke run
    python -m bench.bench_sharded --mib 256 --repeats 5 --dir /some/disk
    python -m bench.bench_sharded --s3       # also: to a local S3 server (moto), beside s3fs

It starts itself on 2 processes (torch.distributed.run). Each measurement is wall time on rank 0
between two barriers; every method writes a fresh folder in the same place, fsynced (ember: rank files
+ metadata + atomic rename; DCP: ``sync_files=True``; raw: each rank one file + fsync); the order of the
methods rotates each repeat and ``os.sync()`` runs between methods, so no method pays for another's
dirty pages. Loads read what the same repeat just saved (page cache hot: memory speed is the bar).

``--s3`` adds two methods against a moto S3 server on loopback (started here, or ``--endpoint``):
``ember-s3`` (``save_sharded``/``load_sharded`` to ``s3://``: each rank uploads its rank file as a
multipart upload, rank 0 writes metadata.json last; loads download then verify) and ``s3fs`` (the
limit: each rank ``fs.pipe_file`` / ``fs.cat_file`` of its raw bytes, already in memory; no checks, no
commit). Their ratios are to ``s3fs``; the moto server (one Python process) bounds both.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ["ember", "dcp", "raw"]
S3_METHODS = ["ember-s3", "s3fs"]


def _state(mib: float, world: int, mesh):
    import torch
    from torch.distributed.tensor import Shard, distribute_tensor

    n_tensors = 16
    rows = max(world, int(mib * 2**20 / 4 / 1024 / n_tensors) // world * world)
    torch.manual_seed(0)
    sd = {f"layer{i}.weight": distribute_tensor(torch.randn(rows, 1024), mesh, [Shard(0)]) for i in range(n_tensors)}
    return {"state_dict": sd, "epoch": 1, "global_step": 10, "hyper_parameters": {"lr": 0.1}}


def _fresh_like(state):
    import torch

    return {"state_dict": {k: torch.zeros_like(v) for k, v in state["state_dict"].items()}}


def _raw_save(state, folder: Path, rank: int) -> None:
    from bench.common import tensor_memoryview, write_all

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"raw-{rank}.bin", "wb", buffering=0) as f:
        for t in state["state_dict"].values():
            write_all(f, tensor_memoryview(t.to_local()))
        os.fsync(f.fileno())


def _raw_load(state, folder: Path, rank: int) -> None:
    from bench.common import tensor_memoryview

    with open(folder / f"raw-{rank}.bin", "rb", buffering=0) as f:
        for t in state["state_dict"].values():
            view = tensor_memoryview(t.to_local())
            while len(view):
                view = view[f.readinto(view):]


_RAW: dict[int, bytes] = {}


def _raw_bytes(state) -> bytes:
    """The state's bytes as one object (made once per state, before the first timed s3fs save)."""
    from bench.common import tensor_memoryview

    if id(state) not in _RAW:
        _RAW[id(state)] = b"".join(bytes(tensor_memoryview(t.to_local())) for t in state["state_dict"].values())
    return _RAW[id(state)]


def _s3(method: str, op: str, state, folder: Path, rank: int, bucket: str) -> None:
    import fsspec

    from ember.checkpoint.sharded import load_sharded, save_sharded

    url = f"s3://{bucket}/{folder.name}"
    if method == "ember-s3":
        (save_sharded if op == "save" else load_sharded)(state, url)
    elif op == "save":
        fsspec.filesystem("s3").pipe_file(f"{url}/raw-{rank}.bin", _raw_bytes(state))
    else:
        assert len(fsspec.filesystem("s3").cat_file(f"{url}/raw-{rank}.bin")) > 0


def _save(method: str, state, folder: Path, rank: int, bucket: str = "") -> None:
    import torch.distributed.checkpoint as dcp

    from ember.checkpoint.sharded import save_sharded

    if method in S3_METHODS:
        _s3(method, "save", state, folder, rank, bucket)
    elif method == "ember":
        save_sharded(state, folder)
    elif method == "dcp":
        dcp.save(state["state_dict"], storage_writer=dcp.FileSystemWriter(folder, sync_files=True))
    else:
        _raw_save(state, folder, rank)


def _load(method: str, state, folder: Path, rank: int, bucket: str = "") -> None:
    import torch.distributed.checkpoint as dcp

    from ember.checkpoint.sharded import load_sharded

    if method in S3_METHODS:
        _s3(method, "load", state, folder, rank, bucket)
    elif method == "ember":
        load_sharded(state, folder)
    elif method == "dcp":
        dcp.load(state["state_dict"], storage_reader=dcp.FileSystemReader(folder))
    else:
        _raw_load(state, folder, rank)


def _timed(fn) -> float:
    import torch.distributed as dist

    dist.barrier()
    t0 = time.perf_counter()
    fn()
    dist.barrier()
    return time.perf_counter() - t0


def _settle(rank: int) -> None:
    import torch.distributed as dist

    if rank == 0:
        os.sync()
    dist.barrier()


def worker(args) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    state = _state(args.mib, world, mesh)
    nbytes = sum(t.numel() * t.element_size() for t in state["state_dict"].values())
    root = Path(args.dir)
    methods = METHODS + (S3_METHODS if args.bucket else [])
    times = {(m, op): [] for m in methods for op in ("save", "load")}
    small = _state(1, world, mesh)  # warm-up, not timed: first-call costs (imports, lazy set-up) are no method's
    if args.bucket:
        _raw_bytes(state)  # s3fs uploads bytes already in memory: made here, untimed
    for m in methods:
        _save(m, small, root / f"warmup-{m}.ckpt", rank, args.bucket)
        _load(m, _fresh_like(small), root / f"warmup-{m}.ckpt", rank, args.bucket)
    for rep in range(args.repeats):
        order = methods[rep % len(methods):] + methods[:rep % len(methods)]
        if rep % 2:
            order.reverse()
        for m in order:
            folder = root / f"{m}-{rep}.ckpt"
            _settle(rank)
            times[(m, "save")].append(_timed(lambda: _save(m, state, folder, rank, args.bucket)))
            _settle(rank)
            target = _fresh_like(state)
            times[(m, "load")].append(_timed(lambda: _load(m, target, folder, rank, args.bucket)))
            if m not in ("raw", "s3fs"):
                assert all(torch.equal(target["state_dict"][k].to_local(), v.to_local())
                           for k, v in state["state_dict"].items()), m
            dist.barrier()
            if rank == 0:
                shutil.rmtree(folder, ignore_errors=True)
            _settle(rank)
    if rank == 0:
        _report(times, nbytes, world, args, methods)
    dist.barrier()
    dist.destroy_process_group()


def _report(times, nbytes: int, world: int, args, methods: list[str]) -> None:
    gib = nbytes / 2**30
    print(f"\nsharded checkpoints: {gib:.2f} GiB of float32 DTensors (Shard(0), 16 tensors) on {world} gloo ranks, "
          f"{args.repeats} repeats, folder {args.dir}; median seconds, GiB/s, and the median of per-repeat "
          "ratios to DCP (lower is faster)")
    print(f"{'method':<8} {'save s':>8} {'save GiB/s':>11} {'vs DCP':>7}   "
          f"{'load s':>8} {'load GiB/s':>11} {'vs DCP':>7}")
    for m in methods:
        row = [f"{m:<8}"]
        base = "s3fs" if m in S3_METHODS else "dcp"  # S3 rows: the ratio is to s3fs, not DCP
        for op in ("save", "load"):
            med = statistics.median(times[(m, op)])
            ratio = statistics.median(a / b for a, b in zip(times[(m, op)], times[(base, op)]))
            row.append(f"{med:>8.3f} {gib / med:>11.2f} {ratio:>7.2f}")
        print(" ".join(row[:1]) + " " + row[1] + "   " + row[2])
    print("ember: rank files with CRC-32C over every byte + JSON metadata written last + atomic rename; "
          "loads verify every chunk read. DCP: FileSystemWriter(sync_files=True), pickled .metadata. "
          "raw: the same bytes, one file per rank, write+fsync / readinto (no metadata, no checks).")
    if "s3fs" in methods:
        print("S3 rows (moto on loopback), 'vs DCP' is vs s3fs: ember-s3 = save_sharded/load_sharded to s3:// "
              "(multipart per rank, metadata last; loads download and verify); s3fs = each rank pipe_file/cat_file "
              "of its raw bytes.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=float, default=1024.0, help="total state size in MiB (default 1024)")
    ap.add_argument("--small", action="store_true", help="a 64 MiB smoke run with 2 repeats")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a fresh folder under the system temp dir)")
    ap.add_argument("--s3", action="store_true", help="also save/load to a local S3 server (moto), beside s3fs")
    ap.add_argument("--endpoint", default=None, help="an S3 endpoint to use instead of starting moto (with --s3)")
    ap.add_argument("--bucket", default="", help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.small:
        args.mib, args.repeats = 64.0, 2
    if args.worker:
        worker(args)
        return
    made = args.dir is None
    folder = tempfile.mkdtemp(prefix="bench-sharded-") if made else args.dir
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, os.path.join(root, "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(Path(__file__).resolve()), "--worker", "--mib", str(args.mib), "--repeats", str(args.repeats),
           "--dir", folder]
    server = None
    if args.s3:
        import fsspec

        from bench.s3 import start_server

        if args.endpoint is None:
            server, args.endpoint = start_server()
        env.update(AWS_ENDPOINT_URL=args.endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                   AWS_DEFAULT_REGION="us-east-1")
        os.environ.update({k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                               "AWS_DEFAULT_REGION")})
        bucket = f"bench-sharded-{os.getpid()}"
        fsspec.filesystem("s3").mkdir(bucket)
        cmd += ["--bucket", bucket]
    try:
        rc = subprocess.call(cmd, env=env)
    finally:
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        if server is not None:
            server.kill()
            server.wait()
    sys.exit(rc)


if __name__ == "__main__":
    main()
