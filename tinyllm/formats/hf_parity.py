"""The transformers parity check: load an exported folder with transformers itself and compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import Tokenizer
from tinyllm.errors import TinyLLMError
from tinyllm.formats.hf_tokenizer import PROBE_TEXT

HF_PARITY_TOLERANCE = 1e-3  # export refuses to claim Llama compatibility beyond this max |Δlogit| (tests ask 1e-4)


def check_with_transformers(folder: Path, model: GPT, tokenizer: Tokenizer) -> dict[str, Any] | None:
    """Load ``folder`` with transformers and compare: logits (Llama layout) and tokenizer ids.

    Returns what was measured, or None when transformers is not installed.
    Refuses (TinyLLMError) when transformers computes something else.
    """
    try:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        return None
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        result: dict[str, Any] = {"transformers_version": transformers.__version__}
        hf_tok = AutoTokenizer.from_pretrained(folder)
        byte_level = tokenizer.name in ("gpt2", "bpe")  # any text encodes; a char vocabulary only its own
        probe = PROBE_TEXT if byte_level else "".join(c for c in PROBE_TEXT if c in tokenizer.chars)
        probe = probe or tokenizer.decode([0])
        if hf_tok(probe, add_special_tokens=True)["input_ids"] != tokenizer.encode(probe):
            raise TinyLLMError("transformers' AutoTokenizer gives other ids than tinyllm's tokenizer: please report it")
        result["tokenizer_class"] = type(hf_tok).__name__
        if model.config.is_llama_shaped:
            hf_model = AutoModelForCausalLM.from_pretrained(folder).eval()
            n = min(model.config.block_size, 64)
            ids = torch.randint(0, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(0))
            device = model.embed_tokens.weight.device
            with torch.inference_mode():
                ours = model.float()(ids.to(device)).cpu()
                theirs = hf_model(ids).logits.float()
            diff = (ours - theirs).abs().max().item()
            result.update(architecture=type(hf_model).__name__, tokens=n, max_abs_logit_diff=diff)
            if not diff <= HF_PARITY_TOLERANCE:
                raise TinyLLMError(
                    f"transformers' {type(hf_model).__name__} differs from tinyllm by up to {diff:.3g} in the logits: "
                    "the folder would not be a faithful Llama export; please report this (or pass --verify false)"
                )
        return result
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()

