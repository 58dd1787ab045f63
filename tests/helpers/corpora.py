"""Small generated corpora (made on the spot, deterministic) and prepared dataset folders made from them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

WORDS = ("the king queen sword crown night day love death castle river stone winter summer bright dark "
         "speak answer fool wise old young gold iron horse field gate tower bell").split()  # fmt: skip


def documents(n: int, seed: int = 0, min_words: int = 5, max_words: int = 60) -> list[str]:
    """``n`` documents of a few lines of words, different lengths, plain ASCII."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(min_words, max_words)))
        lines = [" ".join(words[j : j + 8]).capitalize() + "." for j in range(0, len(words), 8)]
        docs.append(f"Document {i}.\n" + "\n".join(lines))
    return docs


def write_folder(root: Path, docs: list[str]) -> Path:
    """``docs`` as root/part-{k}/doc-{i:03d}.txt (sorted order = document order), the 4th one gzipped."""
    root.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        sub = root / f"part-{i // 10}"
        sub.mkdir(exist_ok=True)
        data = doc.encode("utf-8")
        if i == 3:
            (sub / f"doc-{i:03d}.txt.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (sub / f"doc-{i:03d}.txt").write_bytes(data)
    return root


def write_jsonl(path: Path, docs: list[str], field: str = "text", gz: bool = False) -> Path:
    lines = "".join(json.dumps({"id": i, field: d}) + "\n" for i, d in enumerate(docs)).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(lines, mtime=0) if gz else lines)
    return path


def prepared(inputs: str | Path | list, out: Path, **options) -> Path:
    """``prepare`` called in-process (one worker unless told), returning the folder."""
    from tinyllm.commands.prepare import prepare

    options.setdefault("workers", 1)
    prepare([str(p) for p in inputs] if isinstance(inputs, list) else str(inputs), str(out), **options)
    return out


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def token_folder(folder: Path, train: np.ndarray, val: np.ndarray, shard_tokens: int = 1000, vocab_size: int = 50_257,
                 **meta) -> Path:  # fmt: skip
    """A prepared folder written directly with the format's writer: ``train``/``val`` ids, cut every ``shard_tokens``.

    The tokenizer is gpt2's (50,257 ids) unless ``meta`` says otherwise; byte counts are one per token unless given.
    """
    from tinyllm.core.dataset import FORMAT, VERSION, ShardWriter, dtype_name, token_dtype, write_meta

    folder.mkdir(parents=True)
    dtype = token_dtype(vocab_size)
    splits = {}
    for split, ids in (("train", train), ("val", val)):
        w = ShardWriter(folder, split, dtype, shard_tokens)
        w.write(np.asarray(ids))
        splits[split] = {"tokens": w.tokens, "bytes": w.tokens, "documents": 1, "shards": w.close()}
    full = {"format": FORMAT, "version": VERSION, "tokenizer": {"kind": "gpt2"}, "vocab_size": vocab_size,
            "eot_id": None, "dtype": dtype_name(dtype), "separator": None, "split_rule": "position",
            "splits": splits, "sources": [], "options": {}}  # fmt: skip
    for key, value in meta.items():
        if key in ("train_bytes", "val_bytes"):
            splits[key.split("_")[0]]["bytes"] = value
        else:
            full[key] = value
    write_meta(folder, full)
    return folder
