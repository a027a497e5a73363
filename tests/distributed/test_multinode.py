"""Trainer(num_nodes=2) on two loopback "nodes" (two launcher processes on this machine, one rank
each): torchrun with a static master address, torchrun with the c10d rendezvous, and ember's own
launcher with NODE_RANK/MASTER_ADDR/MASTER_PORT. A run stopped mid-epoch and resumed on 2 nodes ends
torch.equal to an uninterrupted one. Nodes that do not share the checkpoint folder fail the save with
an error saying so, and commit nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

import ember
import jobrunner

JOB = str(jobrunner.JOBS / "trainer_ddp.py")
TIMEOUT = 240


def _node_command(how: str, node: int, port: int, args: list[str]) -> tuple[list[str], dict]:
    env = jobrunner.clean_env()
    if how == "launcher":
        env.update(NODE_RANK=str(node), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        return [sys.executable, JOB, *args, "--launch", "1", "--num-nodes", "2"], env
    run = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
    if how == "static":
        run += ["--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port)]
    else:  # c10d: the nodes meet at the endpoint; ranks are given in the order they arrive
        run += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "ember-test"]
    return [*run, JOB, *args, "--num-nodes", "2"], env


def run_two_nodes(how: str, args: list[str], wrap: list[str] | None = None) -> list[subprocess.CompletedProcess]:
    """Start both nodes at once; wait for both (each with a timeout)."""
    port = jobrunner.free_port()
    procs = []
    for node in range(2):
        cmd, env = _node_command(how, node, port, args)
        procs.append(subprocess.Popen([*(wrap or []), *cmd], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    done = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return done


def _weights(root) -> dict:
    return ember.load_checkpoint(root / "rank0.ckpt")


@pytest.mark.parametrize("strategy, first, second, reference", [
    ("ddp", "launcher", "launcher", "static"),
    ("fsdp", "static", "c10d", "launcher"),
])
def test_two_nodes_resume_mid_epoch_equal_to_an_uninterrupted_run(tmp_path, strategy, first, second, reference):
    # 48 samples, batch 4, 2 ranks: 6 steps per epoch; stop at step 4 (mid-epoch 1), resume to step 9 (epoch 2)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for r in run_two_nodes(reference, [str(whole), "--strategy", strategy, "--max-steps", "9"]):
        assert r.returncode == 0, r.stdout[-3000:]
    for r in run_two_nodes(first, [str(parts), "--strategy", strategy, "--max-steps", "4"]):
        assert r.returncode == 0, r.stdout[-3000:]
    for r in run_two_nodes(second, [str(parts), "--strategy", strategy, "--max-steps", "9", "--resume"]):
        assert r.returncode == 0, r.stdout[-3000:]
    a, b = _weights(whole), _weights(parts)
    assert a["world_size"] == b["world_size"] == 2 and a["global_step"] == b["global_step"] == 9
    for k, v in a["state_dict"].items():
        assert torch.equal(b["state_dict"][k], v), k


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare(1) with user and mount namespaces")
def test_nodes_that_do_not_share_the_checkpoint_folder_fail_the_save_and_commit_nothing(tmp_path):
    # each "node" sees its own empty filesystem at the same path (a tmpfs in a mount namespace of its own)
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    wrap = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs tmpfs "{ckpts}" && exec "$0" "$@"']
    results = run_two_nodes("launcher", [str(tmp_path / "out"), "--strategy", "fsdp", "--ckpt-dir", str(ckpts),
                                         "--max-steps", "2", "--every-step", "--grace", "5"], wrap=wrap)
    assert all(r.returncode != 0 for r in results), [r.stdout[-2000:] for r in results]
    node0 = results[0].stdout
    assert "cannot commit the sharded checkpoint" in node0 and "the ranks do not see the same folder" in node0
    assert "rank-00001.safetensors is missing as rank 0 sees it" in node0 and "Nothing was committed" in node0
