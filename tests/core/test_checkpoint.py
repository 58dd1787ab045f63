"""tinyllm.core.checkpoint reads checkpoints safely: foreign pickles are refused."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import (
    assert_one_line_error,
    run_cli,
)
from tinyllm.core.checkpoint import read_checkpoint
from tinyllm.errors import TinyLLMError
from tinyllm.formats.load import load_model


class Payload:
    """Unpickling this calls open(marker, "w"): a stand-in for code an untrusted file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class SneakyDict(collections.OrderedDict):
    """A dict subclass defined here: weights_only loading must refuse to import it."""


@pytest.mark.parametrize("kind", ["object-that-runs-code", "ordereddict-subclass"])
def test_checkpoint_with_foreign_pickles_is_refused(runs, tmp_path: Path, kind: str):
    marker = tmp_path / "code-ran"
    ckpt = torch.load(runs["char"], map_location="cpu", weights_only=True)
    if kind == "object-that-runs-code":
        ckpt["hyper_parameters"]["extra"] = Payload(marker)
    else:
        ckpt["state_dict"] = SneakyDict(ckpt["state_dict"])
    evil = tmp_path / "evil.ckpt"
    torch.save(ckpt, evil)

    with pytest.raises(TinyLLMError, match="refused to load") as err:
        load_model(evil)
    assert "\n" not in str(err.value) and "sources you trust" in str(err.value)
    proc = run_cli("generate", "--ckpt_path", evil, "--max_new_tokens", "5", cwd=tmp_path)
    assert_one_line_error(proc, "refused to load", "evil.ckpt")
    assert not marker.exists(), "unpickling ran code from the checkpoint"


@pytest.mark.parametrize("content", [b"hello\n", bytes(range(256)) * 4, b"PK\x03\x04 this is not a checkpoint"],
                         ids=["text", "random-bytes", "zip-header-only"])  # fmt: skip
def test_a_file_that_is_no_checkpoint_is_named_so(tmp_path: Path, content: bytes):
    path = tmp_path / "notes.ckpt"
    path.write_bytes(content)
    with pytest.raises(TinyLLMError, match="is not a readable checkpoint .*another kind of file") as err:
        read_checkpoint(path)
    assert "\n" not in str(err.value) and "notes.ckpt" in str(err.value)


def test_a_file_of_another_kind_is_not_called_a_damaged_checkpoint(tmp_path: Path):
    path = tmp_path / "train_000000.bin"  # a dataset's shard, say: nothing to move away
    path.write_bytes(bytes(range(256)))
    with pytest.raises(TinyLLMError) as err:
        read_checkpoint(path)
    assert "is not a checkpoint" in str(err.value) and "move it away" not in str(err.value)


def test_a_damaged_archive_is_one_line(runs, tmp_path: Path):
    """A zip whose pickle record is damaged (its end intact, so it still looks like an archive) is one line too."""
    data = bytearray(Path(runs["char"]).read_bytes())
    data[64:4096] = bytes(4096 - 64)  # the archive's first record: the pickled dict
    path = tmp_path / "damaged.ckpt"
    path.write_bytes(bytes(data))
    with pytest.raises(TinyLLMError) as err:
        read_checkpoint(path)
    assert "\n" not in str(err.value) and "damaged.ckpt" in str(err.value)
