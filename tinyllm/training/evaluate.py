"""Figures measured on a model now: its val loss over the whole held-out split, as ``validate``, and samples."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from tinyllm.core.defaults import TEMPERATURE, TOP_K
from tinyllm.core.generate import generate
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import Tokenizer
from tinyllm.errors import TinyLLMError
from tinyllm.formats.card import TINY_SHAKESPEARE_HUB, Measured
from tinyllm.training.data import ShakespeareDataModule
from tinyllm.training.metrics import VAL_LOSS
from tinyllm.training.module import GPTLitModule


def held_out(data: ShakespeareDataModule, corpus: str) -> str:
    """The validation split in words: a prepared folder's is the one prepare made, by position or by document."""
    if not data.prepared:
        return f"the last {data.val_fraction:.0%} of {corpus}"
    dataset = data.dataset()
    fraction = data.val_fraction if dataset.val_fraction is None else dataset.val_fraction
    if dataset.meta.get("split_rule") == "documents":
        held = dataset.meta["splits"]["val"]["documents"]
        return f"the {held:,} held-out document{'s' * (held != 1)} of {corpus} (about 1 in {round(1 / fraction)})"
    return f"the last {fraction:.0%} of {corpus}"


def measure(model: GPT, tokenizer: Tokenizer, data_path: str | None, data_dir: str | None, val_fraction: float,
            prompt: str, samples: int, max_new_tokens: int, seed: int) -> Measured:
    """Val loss of ``model`` over the whole held-out split (as ``tinyllm validate``), and a few samples."""
    data = ShakespeareDataModule(data_dir=data_dir, path=data_path, tokenizer=tokenizer.spec,
                                 block_size=model.config.block_size, batch_size=32, val_fraction=val_fraction,
                                 val_tokens=None)  # all of it, as the card says: not training's capped sample
    if data.tokenizer_state != tokenizer.state():
        raise TinyLLMError("the checkpoint's tokenizer differs from the data's: pass --data_path, the text file or "
                           "prepared folder it was trained on (export can also skip the measurement: --measure "
                           "false)")  # fmt: skip
    lit = GPTLitModule(arch=model.config, tokenizer=tokenizer.state())
    lit.model.load_state_dict(model.state_dict())
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    (metrics,) = trainer.validate(lit, datamodule=data, verbose=False)
    val_tokens = len(data.val_dataloader().dataset) * model.config.block_size  # whole windows of targets
    ids = tokenizer.encode(prompt)
    texts = []
    for i in range(samples):
        g = generate(model.eval(), ids, max_new_tokens, decode=tokenizer.decode, seed=seed + i,
                     temperature=TEMPERATURE, top_k=TOP_K)  # fmt: skip
        settings = f"prompt {prompt!r}, temperature {TEMPERATURE}, top-k {TOP_K}, seed {seed + i}"
        texts.append((settings, prompt + g.texts[0]))
    corpus = Path(data_path).name if data_path else "Tiny Shakespeare"
    split = held_out(data, corpus)
    hub = None if data_path else TINY_SHAKESPEARE_HUB
    return Measured(float(metrics[VAL_LOSS]), val_tokens, split, texts, corpus, hub)
