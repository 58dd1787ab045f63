"""The LightningModule (tinyllm.training.module) on its own, without a Trainer."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.cli import one_line_error
from tinyllm.core.config import GPTConfig
from tinyllm.errors import TinyLLMError
from tinyllm.training.module import GPTLitModule

TINY = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8)


def test_the_model_compiles_with_compats_options(monkeypatch: pytest.MonkeyPatch):
    seen = []
    monkeypatch.setattr("tinyllm.training.module.training_compile_options", lambda: {"cpp.simdlen": 256})
    monkeypatch.setattr("tinyllm.core.model.GPT.compile", lambda self, **kwargs: seen.append(kwargs))
    GPTLitModule(TINY, compile=True)
    GPTLitModule(TINY, compile=False)
    assert seen == [{"options": {"cpp.simdlen": 256}}]


@pytest.mark.parametrize("compile", [False, True])
def test_a_nan_loss_is_one_line_that_says_what_to_change(compile: bool, monkeypatch: pytest.MonkeyPatch):
    lit = GPTLitModule(TINY, compile=compile)  # compiling is lazy: nothing is compiled until a forward
    monkeypatch.setattr(lit, "loss", lambda batch: torch.tensor(float("nan")))
    batch = (torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(TinyLLMError) as excinfo:
        lit.training_step(batch, 0)
    message = one_line_error(excinfo)
    assert message.startswith("the loss became nan at step 0: ") and "--trainer.precision 32-true" in message
    assert ("--model.compile" in message) == compile  # compiled, torch's own kernels are the first suspect
