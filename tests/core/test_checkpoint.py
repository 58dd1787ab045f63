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
