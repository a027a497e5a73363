"""What ``import ember`` and a first fit leave out: torch's slow optional parts are imported only by the code
that needs them (``torch.distributed.checkpoint`` by sharded saves and loads, ``torch._dynamo`` by
``torch.compile``)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import torch
import ember
from ember.utilities.compile import is_compiled
assert not is_compiled(torch.nn.Linear(1, 1))
print(sorted(m for m in ("torch.distributed.checkpoint", "torch._dynamo") if m in sys.modules))
"""


def test_import_ember_and_a_compile_check_leave_dcp_and_dynamo_unimported():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
