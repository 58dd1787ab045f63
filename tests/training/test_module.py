"""The LightningModule (tinyllm.training.module) on its own, without a Trainer."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.cli import one_line_error
from tinyllm.core.checkpoint import TRAINING_HPARAMS
from tinyllm.core.config import GPTConfig
from tinyllm.core.model import GPT
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


@pytest.mark.parametrize(("compile", "precision"), [(False, "bf16-mixed"), (True, "bf16-mixed"), (False, "32-true")])
def test_a_nan_loss_is_one_line_that_says_what_to_change(compile: bool, precision: str,
                                                        monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    lit = GPTLitModule(TINY, compile=compile)  # compiling is lazy: nothing is compiled until a forward
    lit.trainer = SimpleNamespace(precision=precision, global_step=0)  # what of its trainer the message reads
    monkeypatch.setattr(lit, "loss", lambda batch: torch.tensor(float("nan")))
    batch = (torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(TinyLLMError) as excinfo:
        lit.training_step(batch, 0)
    message = one_line_error(excinfo)
    assert message.startswith("the loss became nan at step 0: ") and "lower the learning rate" in message
    assert ("--trainer.precision 32-true" in message) == (precision != "32-true")  # no advice to do what it does
    assert ("--model.compile" in message) == compile  # compiled, torch's own kernels are the first suspect


def test_a_compiled_model_evaluates_the_last_shorter_batch_with_the_first_batchs_graph(monkeypatch: pytest.MonkeyPatch):
    graphs = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs: list) -> Any:
        graphs.append(gm)
        return gm.forward

    compile_with_options = GPT.compile
    monkeypatch.setattr(GPT, "compile", lambda self, **kwargs: compile_with_options(self, backend=counting_backend))
    torch._dynamo.reset()
    lit = GPTLitModule(TINY, compile=True).eval()
    x = torch.randint(0, TINY.vocab_size, (5, 8), generator=torch.Generator().manual_seed(0))
    y = x.roll(-1, dims=1)
    with torch.no_grad():
        lit.validation_step((x[:3], y[:3]), 0)  # a full batch of 3 windows
        lit.validation_step((x[3:], y[3:]), 1)  # the split's last 2
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        expected = F.cross_entropy(lit.model(x).flatten(0, 1), y.flatten())
    torch._dynamo.reset()
    assert len(graphs) == 1  # the 2-window batch would have compiled a second graph
    torch.testing.assert_close(lit.val_loss.compute(), expected)  # the padding rows count for nothing


@pytest.mark.parametrize(("saved", "words"), [
    ({"kind": "gpt2"}, ["checkpoint gpt2, run char"]),
    ({"kind": "char", "chars": "xyz"}, ["both char, learned from different text"]),
])  # fmt: skip
def test_a_checkpoint_of_another_tokenizer_is_named_by_its_kind(saved: dict[str, str], words: list[str]):
    lit = GPTLitModule(TINY, tokenizer={"kind": "char", "chars": "abc"})
    with pytest.raises(TinyLLMError) as excinfo:
        lit.on_load_checkpoint({"hyper_parameters": {"tokenizer": saved, "arch": TINY.to_dict()}})
    message = one_line_error(excinfo)
    assert all(w in message for w in words) and "'chars'" not in message, message  # kinds, not a state's dump


def test_the_recorded_training_hyperparameters_are_the_modules_options():
    # A new option of the module that shapes training is checked on resume and shown in the model card.
    options = set(inspect.signature(GPTLitModule.__init__).parameters) - {"self"}
    assert set(TRAINING_HPARAMS) == options - {"arch", "tokenizer", "compile"}
