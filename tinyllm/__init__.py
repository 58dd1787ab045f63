"""tinyllm: train a small GPT from scratch (on Tiny Shakespeare first), from GPT-2 to LLaMA one swap at a time.

The package is layered; each layer imports only the ones above it in this list:

    errors, files, compat   foundations: user errors, data files, private APIs of torch/Lightning
    core/                   the model and tokenizers, plain PyTorch
    formats/                files other software reads (Hugging Face folders, model cards)
    training/               Lightning: data, module, callbacks, the CLI
    commands/               python -m tinyllm COMMAND (registry in __main__)
"""

from tinyllm.core.config import GPTConfig
from tinyllm.core.model import GPT, KVCache

__all__ = ["GPT", "GPTConfig", "KVCache"]
__version__ = "0.1.0"
