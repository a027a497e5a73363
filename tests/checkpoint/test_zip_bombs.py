"""A torch.save zip whose entries inflate far beyond what its pickle declares (a zip bomb) is
refused from its central directory, before anything is inflated."""

from __future__ import annotations

import resource
import zipfile

import pytest
import torch

import ember
from ember.errors import CheckpointCorruptError

MIB = 2**20


def rezip(src, dst, replace=None, deflate=False):
    """Copy the zip ``src`` to ``dst``, entry by entry, with data/0's bytes replaced and/or every entry deflated."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w", allowZip64=True) as b:
        for info in a.infolist():
            data = a.read(info)
            if replace is not None and info.filename.endswith("/data/0"):
                data = replace
            b.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)


def test_an_entry_that_inflates_past_its_declared_storage_is_refused_before_inflating(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(3)}}, tmp_path / "small.pt")
    rezip(tmp_path / "small.pt", tmp_path / "bomb.ckpt", replace=bytes(256 * MIB), deflate=True)
    assert (tmp_path / "bomb.ckpt").stat().st_size < 2 * MIB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointCorruptError, match=r"data/0 inflates to 268435456 bytes, but its pickle declares 12"):
        ember.load_checkpoint(tmp_path / "bomb.ckpt")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB: nothing was inflated


def test_a_declared_storage_far_larger_than_the_file_when_compressed_is_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(8 * MIB)}}, tmp_path / "zeros.pt")  # 32 MiB of zeros
    rezip(tmp_path / "zeros.pt", tmp_path / "bomb.ckpt", deflate=True)
    with pytest.raises(CheckpointCorruptError, match="compressed entries inflate to .* bytes from a .*-byte file"):
        ember.load_checkpoint(tmp_path / "bomb.ckpt")


def test_a_compressed_but_honest_small_zip_still_loads(tmp_path):
    torch.save({"state_dict": {"w": torch.arange(1000.0)}, "epoch": 2}, tmp_path / "ok.pt")
    rezip(tmp_path / "ok.pt", tmp_path / "ok.ckpt", deflate=True)
    ckpt = ember.load_checkpoint(tmp_path / "ok.ckpt")
    assert torch.equal(ckpt["state_dict"]["w"], torch.arange(1000.0)) and ckpt["epoch"] == 2
