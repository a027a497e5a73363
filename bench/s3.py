"""S3 benchmark (run by hand): save and load against a local S3 server, next to raw s3fs and Lightning.

    .venv/bin/python bench/s3.py [--sizes 256,1024] [--repeats 3] [--tensors 8] [--endpoint URL] [--out FILE.md]

Starts ``python -m moto.server`` on a free loopback port unless ``--endpoint`` names a server. Per
size, every method runs once untimed (it creates the objects the loads read, and the loaded states
are compared with the saved one), then per repeat, in an order that rotates between repeats, the
same bytes go through:

- ``s3fs pipe`` / ``s3fs cat``: ``fs.pipe_file(path, data)`` and ``fs.cat_file(path)``, s3fs's own
  concurrent multipart upload and ranged download of bytes already in memory (the limit);
- ``storage write`` / ``storage read``: ``FsspecStorage.open_write`` fed 64 MiB pieces (as ember's
  format writer feeds it), ``FsspecStorage.open_read`` + ``readinto`` one buffer of the object's size;
- ``ember save`` / ``ember load``: ``ember.save_checkpoint(ckpt, "s3://...")`` and
  ``ember.load_checkpoint`` (format, checksums and storage together);
- ``Lightning save`` / ``Lightning load``: PyTorch Lightning's own checkpoint IO,
  ``TorchCheckpointIO().save_checkpoint(ckpt, "s3://...")`` (``torch.save`` into memory, then
  ``fs.pipe`` through fsspec) and ``load_checkpoint`` (``torch.load`` from ``fs.open``).

``ckpt`` is ``{"state_dict": {...}, "epoch": 0, "global_step": 0}`` with ``--tensors`` float32
tensors whose bytes, in order, are the raw blob's. Prints a markdown table (also written to
``--out``): median seconds and the median (min, max) of per-repeat ratios to the s3fs limit of
the same repeat. On loopback the moto server (one Python process) does most of the work, so
absolute speeds say more about moto than about S3.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

MiB = 1 << 20
PIECE = 64 * MiB


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the moto server did not start")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,1024", help="MiB, comma-separated (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tensors", type=int, default=8,
                   help="tensors in the checkpoint's state_dict (default %(default)s)")
    p.add_argument("--endpoint", default=None, help="an S3 endpoint to use instead of starting moto")
    p.add_argument("--part-size", type=int, default=32, help="FsspecStorage part_size in MiB")
    p.add_argument("--concurrency", type=int, default=8, help="FsspecStorage concurrency")
    p.add_argument("--read-chunk", type=int, default=None, help="FsspecStorage read_chunk in MiB (default: its own)")
    p.add_argument("--read-ahead", type=int, default=None, help="FsspecStorage read_ahead (default: its own)")
    p.add_argument("--no-lightning", action="store_true", help="leave out the Lightning rows")
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = p.parse_args(argv)

    proc = None
    if args.endpoint:
        endpoint = args.endpoint
    else:
        proc, endpoint = start_server()
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1"})
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        return run(args, endpoint)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()


def versions() -> str:
    import s3fs
    import torch

    import ember

    found = [f"Python {platform.python_version()}", f"torch {torch.__version__}", f"s3fs {s3fs.__version__}"]
    try:
        from importlib.metadata import version

        found.append(f"moto {version('moto')}")
    except Exception:  # noqa: BLE001 - a version is a note, not a requirement
        pass
    try:
        import pytorch_lightning

        found.append(f"pytorch-lightning {pytorch_lightning.__version__}")
    except ImportError:
        pass
    try:
        git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = ""
    found.append(f"ember {getattr(ember, '__version__', '?')}" + (f" (git {git})" if git else ""))
    return ", ".join(found)


def fmt_x(x: float) -> str:
    return f"{x:.2f}"


def run(args: argparse.Namespace, endpoint: str) -> int:
    import s3fs
    import torch

    import ember
    from ember.checkpoint.storage.fsspec import FsspecStorage

    lightning_io = None
    if not args.no_lightning:
        from pytorch_lightning.plugins.io import TorchCheckpointIO

        lightning_io = TorchCheckpointIO()

    started = time.perf_counter()
    fs = s3fs.S3FileSystem()
    bucket = f"ember-bench-{os.getpid()}"
    fs.mkdir(bucket)
    reading = {}
    if args.read_chunk:
        reading["read_chunk"] = args.read_chunk * MiB
    if args.read_ahead:
        reading["read_ahead"] = args.read_ahead
    store = FsspecStorage(f"s3://{bucket}/storage", part_size=args.part_size * MiB, concurrency=args.concurrency,
                          **reading)
    load_before = os.getloadavg()
    setup = (f"endpoint {endpoint} (moto server unless --endpoint); {versions()}; "
             f"FsspecStorage part_size {args.part_size} MiB x {args.concurrency}, "
             f"read_chunk {store.read_chunk // MiB} MiB x {store.read_ahead}; {os.cpu_count()} CPUs "
             f"(shared with the server)")
    print(setup, flush=True)

    rows: list[str] = []
    for size_mib in [int(s) for s in args.sizes.split(",")]:
        n = size_mib * MiB
        if n % (4 * args.tensors):
            raise SystemExit(f"--sizes: {size_mib} MiB does not split into {args.tensors} float32 tensors")
        source = torch.randint(0, 256, (n,), dtype=torch.uint8)
        data = source.numpy().tobytes()
        view = memoryview(data)
        # the checkpoint: separate float32 tensors (no shared storage) whose bytes, in order, are `data`
        state_dict = {f"layers.{i}.weight": piece.clone().view(torch.float32)
                      for i, piece in enumerate(source.split(n // args.tensors))}
        del source
        ckpt = {"state_dict": state_dict, "epoch": 0, "global_step": 0}
        raw_path = f"{bucket}/raw/blob"
        ember_url = f"s3://{bucket}/ember/blob.ckpt"
        lightning_url = f"s3://{bucket}/lightning/blob.ckpt"

        def pipe():
            fs.pipe_file(raw_path, data)

        def cat():
            out = fs.cat_file(raw_path)
            assert len(out) == n

        def write():
            with store.open_write("blob") as f:
                for i in range(0, n, PIECE):
                    f.write(view[i : i + PIECE])

        def read():
            with store.open_read("blob") as (f, size):
                buf = bytearray(size)
                assert f.readinto(buf) == n

        def ember_save():
            ember.save_checkpoint(ckpt, ember_url)

        def ember_load():
            return ember.load_checkpoint(ember_url)

        def lightning_save():
            lightning_io.save_checkpoint(ckpt, lightning_url)

        def lightning_load():
            return lightning_io.load_checkpoint(lightning_url)

        saves = {"s3fs pipe": pipe, "storage write": write, "ember save": ember_save}
        loads = {"s3fs cat": cat, "storage read": read, "ember load": ember_load}
        if lightning_io is not None:
            saves["Lightning save"] = lightning_save
            loads["Lightning load"] = lightning_load
        objects = {"s3fs pipe": raw_path, "storage write": f"{bucket}/storage/blob",
                   "ember save": ember_url, "Lightning save": lightning_url}

        # untimed round: creates what the loads read, checks where the bytes went and what comes back
        for fn in saves.values():
            fn()
        local_dirs = [d for d in ("s3:", "s3") if os.path.exists(d)]
        if local_dirs:
            raise SystemExit(f"a save wrote a local folder {local_dirs} instead of to S3")
        listed = {}
        for name in saves:
            info = fs.info(objects[name])
            listed[name] = info["size"]
            print(f"  {size_mib} MiB: {name} -> s3://{info['name']} ({info['size']:,} bytes, listed by s3fs)",
                  flush=True)
        for name in ("ember load", "Lightning load"):
            if name in loads:
                out = loads[name]()
                for key, t in state_dict.items():
                    if not torch.equal(out["state_dict"][key].view(torch.uint8), t.view(torch.uint8)):
                        raise SystemExit(f"{name}: {key} differs from what was saved")
                assert out["epoch"] == 0 and out["global_step"] == 0
                del out
        cat()
        read()

        times: dict[str, list[float]] = {k: [] for k in [*saves, *loads]}
        for r in range(args.repeats):
            for group in (saves, loads):
                order = list(group)
                order = order[r % len(order):] + order[: r % len(order)]
                for name in order:
                    times[name].append(timed(group[name]))
                    print(f"  {size_mib} MiB repeat {r + 1}: {name} {times[name][-1]:.2f} s", flush=True)

        for name, limit in [*((m, "s3fs pipe") for m in saves), *((m, "s3fs cat") for m in loads)]:
            ts = times[name]
            ratios = [a / b for a, b in zip(ts, times[limit])]
            med = statistics.median(ts)
            ratio_cell = ("1 (the limit)" if name == limit else
                          f"{fmt_x(min(ratios))} / **{fmt_x(statistics.median(ratios))}×** / {fmt_x(max(ratios))}")
            stored = listed[name if name in saves else list(saves)[list(loads).index(name)]]
            rows.append(f"| {size_mib} MiB | {name} | {med:.2f} s | {n / MiB / med:.0f} | {ratio_cell} | "
                        f"{', '.join(f'{x:.2f}' for x in ratios)} | {stored:,} |")

        fs.rm(f"{bucket}/raw", recursive=True)
        store.delete("blob")
        for folder in (f"{bucket}/ember", f"{bucket}/lightning"):
            if fs.exists(folder):
                fs.rm(folder, recursive=True)
        # free this size's buffers before the next one (rebinding, not del: the closures above read these names)
        ckpt = state_dict = data = view = None

    load_after = os.getloadavg()
    took = time.perf_counter() - started
    table = [
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {took:.0f} s; {setup}; "
        f"{args.repeats} repeats, method order rotated per repeat; checkpoint of {args.tensors} float32 tensors; "
        f"load average {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end.",
        "",
        "| Size | Method | median time | MiB/s (of the median) | × s3fs limit, same repeat (min / median / max) "
        "| ratio per repeat | object bytes |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(table) + "\n"
    print("\n" + text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
