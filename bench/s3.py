"""S3 benchmark (run by hand): save and load through FsspecStorage next to raw s3fs, against a local S3 server.

    .venv/bin/python bench/s3.py [--sizes 256,1024] [--repeats 3] [--endpoint URL]

Starts ``python -m moto.server`` on a free loopback port unless ``--endpoint`` names a server. Per
size and repeat, in an order that rotates between repeats, the same bytes go through:

- ``s3fs pipe`` / ``s3fs cat``: ``fs.pipe_file(path, data)`` and ``fs.cat_file(path)``, s3fs's own
  concurrent multipart upload and ranged download of bytes already in memory (the limit);
- ``storage write`` / ``storage read``: ``FsspecStorage.open_write`` fed 64 MiB pieces (as ember's
  format writer feeds it), ``FsspecStorage.open_read`` + ``readinto`` one buffer of the object's size;
- ``ember save`` / ``ember load``: ``ember.save_checkpoint({"w": tensor}, "s3://...")`` and
  ``ember.load_checkpoint`` (format, checksums and storage together), when URLs reach them.

Prints seconds (min / median) and per-repeat ratios to the limit. On loopback the moto server (one
Python process) does most of the work, so absolute speeds say more about moto than about S3.
"""

from __future__ import annotations

import argparse
import os
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
    p.add_argument("--endpoint", default=None, help="an S3 endpoint to use instead of starting moto")
    p.add_argument("--part-size", type=int, default=32, help="FsspecStorage part_size in MiB")
    p.add_argument("--concurrency", type=int, default=8, help="FsspecStorage concurrency")
    p.add_argument("--read-chunk", type=int, default=None, help="FsspecStorage read_chunk in MiB (default: its own)")
    p.add_argument("--read-ahead", type=int, default=None, help="FsspecStorage read_ahead (default: its own)")
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


def run(args: argparse.Namespace, endpoint: str) -> int:
    import s3fs
    import torch

    import ember
    from ember.checkpoint.remote import FsspecStorage

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
    print(f"endpoint {endpoint}; s3fs {s3fs.__version__}; part_size {args.part_size} MiB x {args.concurrency}; "
          f"read_chunk {store.read_chunk // MiB} MiB x {store.read_ahead}; {os.cpu_count()} CPUs (shared with the server)")

    for size_mib in [int(s) for s in args.sizes.split(",")]:
        n = size_mib * MiB
        tensor = torch.randint(0, 256, (n,), dtype=torch.uint8)
        data = tensor.numpy().tobytes()
        view = memoryview(data)
        raw_path = f"{bucket}/raw/blob"

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

        url = f"s3://{bucket}/ember/blob.ckpt"
        ember_note = ""

        def save():
            ember.save_checkpoint({"w": tensor}, url)

        def load():
            out = ember.load_checkpoint(url)
            assert out["w"].numel() == n

        methods = {"s3fs pipe": pipe, "storage write": write}
        loads = {"s3fs cat": cat, "storage read": read}
        try:
            save()
            load()
            methods["ember save"] = save
            loads["ember load"] = load
        except Exception as e:  # noqa: BLE001 - reported, the storage layer is still measured
            ember_note = f"ember.save_checkpoint/load_checkpoint to {url} not measured: {type(e).__name__}: {e}"

        times: dict[str, list[float]] = {k: [] for k in [*methods, *loads]}
        for r in range(args.repeats):
            order = list(methods)
            order = order[r % len(order):] + order[: r % len(order)]
            for name in order:
                times[name].append(timed(methods[name]))
            order = list(loads)
            order = order[r % len(order):] + order[: r % len(order)]
            for name in order:
                times[name].append(timed(loads[name]))

        print(f"\n{size_mib} MiB, {args.repeats} repeats (seconds min / median; ratio to the s3fs limit per repeat, median)")
        for name, limit in [*((m, "s3fs pipe") for m in methods), *((m, "s3fs cat") for m in loads)]:
            ts = times[name]
            ratios = [a / b for a, b in zip(ts, times[limit])]
            print(f"  {name:14s} {min(ts):7.2f} / {statistics.median(ts):7.2f} s  "
                  f"{n / MiB / statistics.median(ts):7.0f} MiB/s  x{statistics.median(ratios):.2f} "
                  f"[{', '.join(f'{x:.2f}' for x in ratios)}]")
        if ember_note:
            print("  " + ember_note)
        fs.rm(f"{bucket}/raw", recursive=True)
        store.delete("blob")
        with_ember = f"{bucket}/ember"
        if fs.exists(with_ember):
            fs.rm(with_ember, recursive=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
