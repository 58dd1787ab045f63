"""Scale-out through Lightning's strategies: two "nodes" on this machine, as two machines would run.

Each node is a ``python -m tinyllm fit`` process in its own folder (its own disk), started with the
environment a launcher gives it: MASTER_ADDR (127.0.0.1 only), MASTER_PORT, NODE_RANK, and
``--trainer.num_nodes 2 --trainer.devices 1 --trainer.strategy ddp``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import REPO, TINY, best_model_score, describe, env_for_cli, load_ckpt, run_cli
from tinyllm.formats.load import load_model
from tinyllm.formats.card import example_prompt
from tinyllm.training.evaluate import measure

# Context 43: 2,593 validation windows, so rank 0 gets 1,297 (163 batches of 8) and rank 1 1,296 (162):
# uneven shards, as real splits are, and no window counted twice.
BLOCK = ["--model.arch.block_size", "43"]
TWO_NODES = ["fit", "--config", str(TINY), *BLOCK, "--trainer.accelerator", "cpu", "--trainer.devices", "1",
             "--trainer.num_nodes", "2", "--trainer.strategy", "ddp", "--trainer.precision", "32-true",
             "--trainer.max_steps", "8", "--trainer.limit_val_batches", "1.0",
             "--trainer.callbacks+=probes.RecordBatches"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(node: int, port: int, cwd: Path, *extra: str) -> subprocess.Popen[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    env = env_for_cli(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(node),
                      PYTHONPATH=str(REPO / "tests" / "helpers"))  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "tinyllm", *TWO_NODES, *extra], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.slow
def test_two_nodes_on_localhost_draw_different_windows_validate_exactly_and_resume_alone(tmp_path: Path):
    port = free_port()
    nodes = [start_node(n, port, tmp_path / f"node{n}") for n in (0, 1)]
    results = [node.communicate(timeout=300) for node in nodes]
    for node, (out, err) in zip(nodes, results):
        assert node.returncode == 0, err[-3000:]
    assert "GLOBAL_RANK: 1" in results[1][1] and "MEMBER: 2/2" in results[1][1], results[1][1][-3000:]
    assert "node 1 of 2: waiting until all 2 run this command (each with its NODE_RANK) and meet at 127.0.0.1:" \
        in results[1][1]  # a node started alone says what it waits for

    # Each rank drew its own windows, none shared.
    drawn = [json.loads((tmp_path / f"node{n}" / f"batches-rank{n}.json").read_text()) for n in (0, 1)]
    assert len(drawn[0]) == len(drawn[1]) == 8 and not set(drawn[0]) & set(drawn[1])

    # Global rank 0 writes the run; node 1's disk holds no checkpoint.
    run = tmp_path / "node0" / "checkpoints/tiny"
    assert (run / "last.ckpt").is_file()
    assert not [p for p in (tmp_path / "node1").rglob("*.ckpt")]

    # The val loss the two processes computed together is the single-process value: no window counted twice.
    loaded = load_model(run / "best.ckpt")
    single = measure(loaded.model, loaded.tokenizer, None, None, 0.1, example_prompt(loaded.tokenizer), 0, 1, 0)
    assert best_model_score(load_ckpt(run / "best.ckpt")) == pytest.approx(single.val_loss, abs=1e-6)

    # Resumed on both nodes, with no last.ckpt on node 1's disk: node 1 would start afresh while node 0
    # resumed, each waiting on the other's collectives for ever. Both stop before training, in one line.
    port = free_port()
    again = [start_node(n, port, tmp_path / f"node{n}", "--ckpt_path", "last", "--trainer.max_steps", "12")
             for n in (0, 1)]
    try:
        for node in again:
            _, err = node.communicate(timeout=120)
            assert node.returncode == 2 and "(rank 0 step 8, rank 1 none)" in err, err[-3000:]
            assert err.rstrip().splitlines()[-1].startswith("tinyllm: error: the processes of this run"), err[-3000:]
    finally:
        for node in again:
            node.kill()
    assert load_ckpt(run / "last.ckpt")["global_step"] == 8  # untouched

    # The checkpoint of the two-node run resumes in one process.
    alone = run_cli("fit", "--config", TINY, *BLOCK, "--trainer.precision", "32-true", "--trainer.max_steps", "12",
                    "--ckpt_path", "last", cwd=tmp_path / "node0")  # fmt: skip
    assert alone.returncode == 0, describe(alone)
    assert "Restoring states from the checkpoint" in alone.stderr
    assert load_ckpt(run / "last.ckpt")["global_step"] == 12


@pytest.mark.slow
def test_two_nodes_train_on_one_prepared_folder_each_drawing_its_own_windows(tmp_path: Path, monkeypatch):
    """Each process maps the same prepared shards (here one folder both "machines" see) and draws its own windows;
    the val loss they compute together is the single-process value."""
    from tests.helpers.corpora import documents, prepared, write_folder
    from tinyllm.training.cli import build_cli

    data = prepared(write_folder(tmp_path / "corpus", documents(200, seed=5)), tmp_path / "data", tokenizer="bpe:300")
    port = free_port()
    nodes = [start_node(n, port, tmp_path / f"node{n}", "--data.path", str(data)) for n in (0, 1)]
    results = [node.communicate(timeout=300) for node in nodes]
    for node, (out, err) in zip(nodes, results):
        assert node.returncode == 0, err[-3000:]
    drawn = [json.loads((tmp_path / f"node{n}" / f"batches-rank{n}.json").read_text()) for n in (0, 1)]
    assert len(drawn[0]) == len(drawn[1]) == 8 and not set(drawn[0]) & set(drawn[1])
    best = tmp_path / "node0" / "checkpoints/tiny/best.ckpt"
    monkeypatch.chdir(tmp_path / "node0")
    alone = build_cli(["validate", "--config", str(TINY), *BLOCK, "--data.path", str(data), "--trainer.precision",
                       "32-true", "--trainer.limit_val_batches", "1.0", "--ckpt_path", str(best)])  # fmt: skip
    assert best_model_score(load_ckpt(best)) == pytest.approx(float(alone.trainer.callback_metrics["val_loss"]), abs=1e-6)
