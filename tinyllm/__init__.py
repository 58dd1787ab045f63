"""tinyllm: a ~10M-parameter GPT trained from scratch on Tiny Shakespeare, from GPT-2 to LLaMA one swap at a time."""

from tinyllm.config import GPTConfig
from tinyllm.model import GPT, KVCache

__all__ = ["GPT", "GPTConfig", "KVCache"]
__version__ = "0.1.0"
