"""``python -m tinyllm prepare``: turn any text corpus into memory-mapped token shards."""

from __future__ import annotations

from tinyllm.errors import TinyLLMError


def prepare(inputs: list[str], out: str, tokenizer: str = "char") -> None:
    """Tokenize a corpus into a dataset folder of memory-mapped token shards.

    Args:
        inputs: text files, folders of .txt files, or .jsonl files (.gz too).
        out: the dataset folder to create.
        tokenizer: char, gpt2, or bpe:N.
    """
    raise TinyLLMError("prepare is not available yet")
