"""The strategy matrix under strategy="ddp" (matrix.py says what each run must do)."""

from __future__ import annotations

import pytest

import matrix


@pytest.mark.parametrize("module", matrix.MODULES)
def test_program_runs_on_two_ranks_checkpoints_resumes_and_agrees(module, tmp_path):
    matrix.check(module, "ddp", tmp_path)
