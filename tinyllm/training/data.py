"""Tiny Shakespeare (or any UTF-8 text) as token windows, for Lightning.

Design choices that later features rely on:

* **Split by position**, like the original and nanoGPT: the first 90% of the
  characters train, the last 10% validate; each part is tokenized on its own.
* **Training batch k is a pure function of (seed, rank, k).** Batches are
  random windows of block_size + 1 tokens drawn from a generator seeded with
  exactly those three numbers, so resuming at batch k replays nothing and skips
  nothing: the data position is one integer in the checkpoint.
* **Validation is a fixed set of windows** (the whole split, cut into
  non-overlapping blocks), so val loss is comparable across runs and checkpoints.
* **Encoded tokens are cached** (keyed by corpus hash, tokenizer and split), so
  a second start does not re-tokenize.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from tinyllm.compat import training_batches_processed
from tinyllm.core.tokenizers import Tokenizer, build_tokenizer
from tinyllm.errors import TinyLLMError
from tinyllm.files import atomic_write_bytes, cache_dirs, resolve_data_dir, shakespeare_path

# ----------------------------------------------------------------------------- corpus → tokens


def read_corpus(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:  # newline="": keep "\r\n" as written
            return f.read()
    except FileNotFoundError:
        raise TinyLLMError(f"corpus file {path} does not exist: check data.path") from None
    except UnicodeDecodeError as e:
        raise TinyLLMError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): convert it to UTF-8") from None


@dataclass
class TokenSplits:
    train: np.ndarray
    val: np.ndarray


def _tokenizer_key(tokenizer: Tokenizer) -> str:
    state = repr(sorted(tokenizer.state().items())).encode()
    return f"{tokenizer.name}-{hashlib.sha256(state).hexdigest()[:8]}"


def encode_splits(corpus: Path, text: str, tokenizer: Tokenizer, val_fraction: float) -> TokenSplits:
    """Tokenize the train/val parts of ``text``, reusing a cached encoding when there is one."""
    text_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    name = f"{text_hash}-{_tokenizer_key(tokenizer)}-val{val_fraction}.npz"
    for folder in cache_dirs(corpus):
        try:
            with np.load(folder / name) as z:
                return TokenSplits(z["train"], z["val"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # missing, truncated or corrupt: look further, then rebuild
    n_train = int(len(text) * (1.0 - val_fraction))
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32
    train = np.array(tokenizer.encode(text[:n_train]), dtype=dtype)
    val = np.array(tokenizer.encode(text[n_train:]), dtype=dtype)
    buf = io.BytesIO()
    np.savez(buf, train=train, val=val)
    for folder in cache_dirs(corpus):
        try:
            atomic_write_bytes(folder / name, buf.getvalue())
            break
        except OSError:
            continue  # read-only folder: try the next; caching is only an optimisation
    return TokenSplits(train, val)


# ----------------------------------------------------------------------------- datasets


class RandomWindows(IterableDataset):
    """Endless training batches of random windows; batch k depends only on (seed, rank, k).

    Yields ``(x, y)`` of shape (batch_size, block_size) with y = x shifted by one.
    Batches are built here (not by a collate function) so that one generator
    draw makes a whole batch, and so worker processes can split the stream
    by k without ever repeating a batch.
    """

    def __init__(self, tokens: torch.Tensor, block_size: int, batch_size: int, seed: int, rank: int, start: int = 0):
        super().__init__()
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.seed, self.rank, self.start = seed, rank, start
        self._offsets = torch.arange(block_size + 1)

    def batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.rank, k])
        starts = rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size)
        windows = self.tokens[torch.from_numpy(starts)[:, None] + self._offsets]
        return windows[:, :-1], windows[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = get_worker_info()
        k, step = self.start, 1
        if worker is not None:  # worker w takes batches w, w+W, …; the loader interleaves them in order
            k, step = self.start + worker.id, worker.num_workers
        while True:
            yield self.batch(k)
            k += step


class FixedWindows(Dataset):
    """The whole split cut into consecutive, non-overlapping windows (the same ones every time)."""

    def __init__(self, tokens: torch.Tensor, block_size: int) -> None:
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.block_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.tokens[i * self.block_size : (i + 1) * self.block_size + 1]
        return w[:-1], w[1:]


# ----------------------------------------------------------------------------- the data module


class ShakespeareDataModule(L.LightningDataModule):
    """Tiny Shakespeare (default) or any UTF-8 text file, char-level or GPT-2 BPE.

    Args:
        data_dir: where ``input.txt`` / ``gpt2.tiktoken`` live or are downloaded
            to; default ``$TINYLLM_DATA_DIR`` or ``./data``.
        path: train on this UTF-8 text file instead of Tiny Shakespeare.
        tokenizer: ``char`` (vocabulary = the corpus's characters) or ``gpt2`` (BPE).
        block_size: tokens per training window (linked to the model's context).
        batch_size: windows per micro-batch.
        val_batch_size: windows per validation batch (default: batch_size).
        val_fraction: the trailing fraction of the text held out for validation.
        seed: seeds the training windows (batch k is a function of seed, rank, k).
        num_workers: DataLoader worker processes (0 is fastest for this tiny data).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        path: str | None = None,
        tokenizer: Literal["char", "gpt2"] = "char",
        block_size: int = 256,
        batch_size: int = 64,
        val_batch_size: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 1337,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if tokenizer not in ("char", "gpt2"):
            raise TinyLLMError(f"data.tokenizer={tokenizer!r} is not one of char, gpt2")
        if batch_size < 1 or block_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise TinyLLMError("data.batch_size, data.val_batch_size and data.block_size must be at least 1")
        if not 0.0 < val_fraction < 1.0:
            raise TinyLLMError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
        self.data_dir, self.path, self.tokenizer_kind = data_dir, path, tokenizer
        self.block_size, self.batch_size = block_size, batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.val_fraction, self.seed, self.num_workers = val_fraction, seed, num_workers
        self.train_batches_done = 0  # restored from checkpoints: where the training stream resumes
        self._text: str | None = None
        self._tokenizer: Tokenizer | None = None
        self._splits: TokenSplits | None = None

    # -- corpus and tokenizer (loaded on first use: the CLI needs vocab_size before fit starts)

    def corpus_path(self) -> Path:
        if self.path is not None:
            p = Path(self.path).expanduser().resolve()
            if not p.is_file():
                raise TinyLLMError(f"data.path {p} is not a file: give the path of a UTF-8 text file")
            return p
        return shakespeare_path(self.data_dir)

    def _load(self) -> tuple[str, Tokenizer]:
        if self._text is None or self._tokenizer is None:
            self._text = read_corpus(self.corpus_path())
            self._tokenizer = build_tokenizer(self.tokenizer_kind, self._text, resolve_data_dir(self.data_dir))
        return self._text, self._tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        return self._load()[1]

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def tokenizer_state(self) -> dict[str, Any]:
        return self.tokenizer.state()

    def splits(self) -> TokenSplits:
        if self._splits is None:
            text, tok = self._load()
            splits = encode_splits(self.corpus_path(), text, tok, self.val_fraction)
            for name, arr in (("train", splits.train), ("val", splits.val)):
                if len(arr) < self.block_size + 1:
                    raise TinyLLMError(
                        f"the {name} split has {len(arr)} tokens, too few for block_size={self.block_size}: "
                        "use a longer text or a smaller block_size"
                    )
            self._splits = splits
        return self._splits

    # -- Lightning hooks

    def prepare_data(self) -> None:
        self.splits()  # download and tokenize once, on one process

    def setup(self, stage: str | None = None) -> None:
        splits = self.splits()
        self.train_tokens = torch.from_numpy(splits.train.astype(np.int64))
        self.val_tokens = torch.from_numpy(splits.val.astype(np.int64))

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        windows = RandomWindows(
            self.train_tokens, self.block_size, self.batch_size, self.seed, rank, start=self.train_batches_done
        )
        # batch_size=None: the dataset already yields whole batches. A private generator keeps the
        # loader from drawing on the global RNG, which drives dropout and must resume exactly.
        return DataLoader(windows, batch_size=None, num_workers=self.num_workers, generator=torch.Generator())

    def val_dataloader(self) -> DataLoader:
        windows = FixedWindows(self.val_tokens, self.block_size)
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            # Each process takes every world_size-th window and no window twice. (Lightning's own
            # DistributedSampler pads the last shard with repeats, which would count some windows twice.)
            sampler = UnrepeatedDistributedSampler(
                windows, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
            )
        return DataLoader(windows, batch_size=self.val_batch_size, shuffle=False, sampler=sampler,
                          num_workers=self.num_workers, generator=torch.Generator())  # fmt: skip

    # -- resume: the data position is the number of training batches consumed

    def state_dict(self) -> dict[str, Any]:
        done = self.train_batches_done
        if self.trainer is not None:
            done = training_batches_processed(self.trainer)
        return {"train_batches_done": done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_batches_done = int(state_dict.get("train_batches_done", 0))
