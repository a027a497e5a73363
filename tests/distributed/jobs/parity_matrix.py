"""The Lightning parity program (tests/test_lightning_parity.py) on 2 ranks: every case of its
``test_lightning_and_ember_agree`` (read from its parametrisation, so a new case joins), run by
``--framework ember --strategy ddp|fsdp`` (ember's self-launch) or ``--framework lightning`` (real
PyTorch Lightning's DDP, its own launcher). Each rank writes ROOT/<framework>-<strategy>-rank<R>.json:
per case, the hook calls, callback/logged/progress-bar metrics, global step, parameters and test results.

usage: python parity_matrix.py ROOT --framework ember|lightning [--strategy ddp|fsdp]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the parity program and tiny.py

import pytorch_lightning
import test_lightning_parity as parity
import torch.distributed

import ember


def cases() -> list[tuple[str, bool, dict]]:
    mark = next(m for m in parity.test_lightning_and_ember_agree.pytestmark if m.name == "parametrize")
    return [(case_id, manual, kw) for case_id, (manual, kw) in zip(mark.kwargs["ids"], mark.args[1])]


def force(make, **forced):
    def trainer(*args, **kwargs):
        return make(*args, **{**kwargs, **forced})
    return trainer


def plain(value):
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "full_tensor"):  # a DTensor (FSDP): the whole parameter (a collective)
        return value.full_tensor().tolist()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, type):
        return value.__name__
    return value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--framework", default="ember")
    ap.add_argument("--strategy", default="ddp")
    ap.add_argument("--launch", type=int, default=2, help="processes (the frameworks start them: always 2)")
    args = ap.parse_args()
    ember_trainer, lightning_trainer = ember.Trainer, pytorch_lightning.Trainer
    out = {}
    for case_id, manual, kw in cases():
        # the manual case steps two layers, each from its own loss: DDP must look for unused parameters
        strategy = "ddp_find_unused_parameters_true" if manual and args.strategy == "ddp" else args.strategy
        if args.framework == "ember":
            ember.Trainer = force(ember_trainer, accelerator="cpu", devices=2, strategy=strategy)
        else:
            pytorch_lightning.Trainer = force(lightning_trainer, accelerator="cpu", devices=2, strategy=strategy)
        root = Path(args.root) / f"{args.framework}-{args.strategy}" / case_id
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (calls, cb, logged, bar, step, params), (test_calls, tested) = parity.run(
                args.framework, root, manual, **kw)
        out[case_id] = {"calls": plain(calls), "callback": cb, "logged": logged, "bar": bar, "step": step,
                        "params": plain(params), "test_calls": plain(test_calls), "tested": tested}
    rank = torch.distributed.get_rank()  # Lightning's launcher sets LOCAL_RANK, not RANK
    Path(args.root, f"{args.framework}-{args.strategy}-rank{rank}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
