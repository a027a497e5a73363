"""The ``ember`` command line: ``ember ckpt inspect | verify | ls | convert | consolidate``.

Everything shown comes from files that may be hostile. Human output escapes every character a
terminal would act on and abbreviates huge integers; ``--json`` keeps exact strings. An unexpected
error on one file becomes one line that names the file (exit code 1), not a traceback. Every path
may be a URL (``s3://``, ``gs://``, ``memory://`` ...).
"""

from __future__ import annotations

import argparse
import sys

from ember.checkpoint.lightning.convert import convert
from ember.cli.folders import consolidate_command
from ember.cli.inspect import inspect_safely, print_inspect, verify_safely
from ember.cli.ls import ls_command
from ember.cli.text import OPTIONS, escape, json_doc, say
from ember.errors import CheckpointError

__all__ = ["LightningArgumentParser", "LightningCLI", "ReduceLROnPlateau", "SaveConfigCallback", "instantiate_class",
           "instantiate_module", "main"]


def __getattr__(name: str):
    # LightningCLI (and jsonargparse) load only when asked for: the `ember` command needs neither.
    if name in ("LightningCLI", "SaveConfigCallback", "LightningArgumentParser"):
        from ember.cli import lightning_cli  # deferred: loaded on first use of the name

        return getattr(lightning_cli, name)
    if name in ("ReduceLROnPlateau", "instantiate_class", "instantiate_module"):
        from ember.cli import instantiate  # deferred: loaded on first use of the name

        return getattr(instantiate, name)
    raise AttributeError(f"module 'ember.cli' has no attribute {name!r}")

_USAGE = ("use `ember ckpt inspect PATH`, `ember ckpt verify PATH...`, `ember ckpt ls DIR`, "
          "`ember ckpt convert SRC DST` or `ember ckpt consolidate SRC DST`")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ember", description="ember command line tools",
        epilog="commands:\n  ember ckpt inspect PATH     summarise a checkpoint\n"
               "  ember ckpt verify PATH...  check every byte of checkpoints\n"
               "  ember ckpt ls DIR          list the checkpoints in a folder (or a URL)\n"
               "  ember ckpt convert SRC DST  convert between PyTorch Lightning's format and ember's\n"
               "  ember ckpt consolidate SRC DST  write a sharded checkpoint folder as one .ckpt file",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traceback", action="store_true",
                   help="show the traceback of an unexpected error (for bug reports)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    ckpt = sub.add_parser("ckpt", help="inspect, verify, list and convert checkpoints").add_subparsers(
        dest="action", metavar="ACTION")
    ins = ckpt.add_parser("inspect", help="summarise a checkpoint (verifies its checksums)")
    ins.add_argument("path")
    ins.add_argument("--tensors", action="store_true", help="list every tensor's name, shape and dtype")
    ins.add_argument("--json", action="store_true", help="print one JSON document")
    ver = ckpt.add_parser("verify", help="check every byte of checkpoints against their checksums")
    ver.add_argument("paths", nargs="+", metavar="PATH")
    ver.add_argument("--json", action="store_true", help="print one JSON document")
    ls = ckpt.add_parser("ls", help="list the checkpoints (*.ckpt) in a folder or URL, reading only their headers")
    ls.add_argument("folder", metavar="DIR")
    ls.add_argument("--verify", action="store_true", help="also check every byte of each checkpoint")
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    conv = ckpt.add_parser("convert", help="convert between PyTorch Lightning's .ckpt format and ember's",
                           description=convert.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    conv.add_argument("src", metavar="SRC")
    conv.add_argument("dst", metavar="DST")
    conv.add_argument("--to", choices=("ember", "lightning"), default=None,
                      help="the format to write (default: the other one)")
    cons = ckpt.add_parser("consolidate", help="write a sharded checkpoint folder as one verified .ckpt file")
    cons.add_argument("src", metavar="SRC", help="a sharded checkpoint folder (name.ckpt/)")
    cons.add_argument("dst", metavar="DST", help="the single-file checkpoint to write (a path or URL)")
    return p


def _convert_command(src: str, dst: str, to: str | None) -> int:
    try:
        where = convert(src, dst, to=to)
    except CheckpointError as e:
        print(escape(f"ember: error: {e}"), file=sys.stderr)
        return 1
    say(f"wrote {where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``ember`` command; returns the exit code (0 ok, 1 a file failed, 2 usage error).

    Args:
        argv: the command's arguments without the program name (``["ckpt", "verify", "a.ckpt"]``); None reads
            ``sys.argv``.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    OPTIONS["traceback"] = args.traceback
    if args.command != "ckpt" or not args.action:
        parser.print_usage(sys.stderr)
        print(f"ember: error: {_USAGE}", file=sys.stderr)
        return 2
    if args.action == "ls":
        return ls_command(args.folder, args.verify, args.json)
    if args.action == "convert":
        return _convert_command(args.src, args.dst, args.to)
    if args.action == "consolidate":
        return consolidate_command(args.src, args.dst)
    if args.action == "inspect":
        info, code = inspect_safely(args.path, args.tensors)
        if args.json:
            print(json_doc(info))
        else:
            print_inspect(info)
        return code
    results = [(path, *verify_safely(path)) for path in args.paths]
    if args.json:
        doc = {"ok": all(ok for _, ok, _ in results),
               "files": [{"path": p, "ok": ok, "detail": d} for p, ok, d in results]}
        print(json_doc(doc))
    else:
        for path, ok, detail in results:
            say(f"OK  {path}" if ok else f"FAIL {path}: {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1
