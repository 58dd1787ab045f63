"""Tiny Shakespeare, any UTF-8 text, or a prepared dataset folder as token windows, for Lightning.

Design choices that later features rely on:

* **Split by position**, like the original and nanoGPT: the first 90% of the
  characters train, the last 10% validate; each part is tokenized on its own.
  (A folder made by ``python -m tinyllm prepare`` has its splits already.)
* **Training batch k is a pure function of (seed, rank, k).** Batches are
  random windows of block_size + 1 tokens drawn from a generator seeded with
  exactly those three numbers, so resuming at batch k replays nothing and skips
  nothing: the data position is one integer in the checkpoint.
* **Validation is a fixed set of windows** (the whole split, cut into
  non-overlapping blocks; above ``val_tokens`` tokens, an evenly spaced subset of
  them), so val loss is comparable across runs and checkpoints.
* **A prepared folder is never loaded**: its shards are read window by window, and only the
  windows of a batch are read, so memory does not depend on the corpus's size. A
  window never spans two shards; a shard is drawn with probability proportional to
  the windows it holds. With one shard, the draws are exactly those for a text file
  of the same tokens.
* **BPE-dropout is a pure function too** (``bpe_dropout``): each pass over a BPE's training tokens is
  cut anew from a generator seeded with (seed, pass), so the model sees one text in many segmentations.
* **Encoded tokens are cached** (keyed by corpus hash, tokenizer and split), so
  a second start does not re-tokenize.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from tinyllm.compat import training_batches_processed, unrepeated_sampler
from tinyllm.core.checkpoint import DATA_POSITION
from tinyllm.core.config import GPTConfig
from tinyllm.core.dataset import (JSONL_SUFFIXES, META_NAME, TOKENIZER_JSON, PreparedDataset, is_dataset, open_dataset,
                                  split_text, token_dtype)
from tinyllm.core.defaults import SEED, VAL_FRACTION, check_seed
from tinyllm.core.tokenizers import (BPETokenizer, Tokenizer, build_tokenizer, parse_tokenizer_spec, stored_spec,
                                     tokenizer_from_state, unmerge)
from tinyllm.errors import TinyLLMError
from tinyllm.files import atomic_write_bytes, cache_dirs, resolve_data_dir, shakespeare_path, user_path

# ----------------------------------------------------------------------------- corpus → tokens


def read_corpus(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:  # newline="": keep "\r\n" as written
            text = f.read()
    except FileNotFoundError:
        raise TinyLLMError(f"corpus file {path} does not exist: check data.path") from None
    except UnicodeDecodeError as e:
        raise TinyLLMError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): convert it to UTF-8") from None
    except OSError as e:  # not "cannot write": the CLI's catch-all for OSError speaks of the run's own files
        raise TinyLLMError(f"cannot read {path} ({e.strerror or e}): check data.path and its permissions") from None
    if not text:  # no characters to learn a vocabulary from, nothing to train or validate on
        raise TinyLLMError(f"{path} is empty: give data.path a text file with some text in it")
    return text


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
    train_text, val_text = split_text(text, val_fraction)
    dtype = token_dtype(tokenizer.vocab_size)  # the dtype prepared shards use too
    train = np.array(tokenizer.encode(train_text), dtype=dtype)
    val = np.array(tokenizer.encode(val_text), dtype=dtype)
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


Tokens = torch.Tensor | Sequence[np.ndarray]  # one split: a tensor, or its shards (ShardFile, or any arrays)


class RandomWindows(IterableDataset):
    """Endless training batches of random windows; batch k depends only on (seed, rank, k).

    Yields ``(x, y)`` of shape (batch_size, block_size) with y = x shifted by one.
    Batches are built here (not by a collate function) so that one generator
    draw makes a whole batch, and so worker processes can split the stream
    by k without ever repeating a batch.

    ``tokens`` is a tensor, or a sequence of shards (ShardFile, numpy arrays):
    then a window lies inside one shard, and the start is one draw over the
    concatenated valid starts of all shards (so a shard is chosen in proportion
    to its windows, and one shard draws exactly as a tensor of its tokens would).
    Only the batch's windows are read, and converted to int64.
    """

    def __init__(self, tokens: Tokens, block_size: int, batch_size: int, seed: int, rank: int, start: int = 0):
        super().__init__()
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.seed, self.rank, self.start = seed, rank, start
        self._offsets = torch.arange(block_size + 1)
        self._starts: np.ndarray | None = None  # shards: valid starts per shard
        if not isinstance(tokens, torch.Tensor):
            self._starts = np.array([max(0, len(t) - block_size) for t in tokens], dtype=np.int64)
            if self._starts.sum() < 1:
                raise ValueError(f"no shard holds a window of {block_size + 1} tokens")
            self._ends = np.cumsum(self._starts)

    def batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.rank, k])
        if self._starts is None:
            starts = rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size)
            windows = self.tokens[torch.from_numpy(starts)[:, None] + self._offsets]
        else:
            pos = rng.integers(0, int(self._ends[-1]), size=self.batch_size)
            shard = np.searchsorted(self._ends, pos, side="right")
            starts = pos - (self._ends[shard] - self._starts[shard])
            n = self.block_size + 1
            rows = [self.tokens[j][s : s + n] for j, s in zip(shard.tolist(), starts.tolist())]
            windows = torch.from_numpy(np.stack(rows).astype(np.int64))
        return windows[:, :-1], windows[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = get_worker_info()
        k, step = self.start, 1
        if worker is not None:  # worker w takes batches w, w+W, …; the loader interleaves them in order
            k, step = self.start + worker.id, worker.num_workers
        while True:
            yield self.batch(k)
            k += step


class ResegmentedWindows(RandomWindows):
    """RandomWindows over a BPE training stream cut afresh for each pass over it (BPE-dropout, see ``unmerge``).

    Pass e is batches e·B … (e+1)·B − 1, B the batches that one pass of the tokens fills, and reads
    ``unmerge(tokens, parents, p)`` drawn from a generator seeded with (seed, e): batch k is still a pure
    function of (seed, rank, k), so a resume replays nothing and skips nothing.
    """

    def __init__(self, tokens: torch.Tensor, parents: np.ndarray, p: float, block_size: int, batch_size: int,
                 seed: int, rank: int, start: int = 0):  # fmt: skip
        super().__init__(tokens, block_size, batch_size, seed, rank, start)
        self.canonical, self.parents, self.p = tokens.numpy(), parents, p
        self.batches_per_pass = max(1, len(tokens) // (block_size * batch_size))
        self._pass: int | None = None

    def batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        e = k // self.batches_per_pass
        if e != self._pass:
            # A spawn key of its own: numpy pads [seed, e] with zeros, which would be the windows' [seed, rank=e, k=0].
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, e], spawn_key=(1,)))
            self.tokens = torch.from_numpy(unmerge(self.canonical, self.parents, self.p, rng))
            self._pass = e
        return super().batch(k)


class FixedWindows(Dataset):
    """The split cut into consecutive, non-overlapping windows (the same ones every time).

    ``tokens`` is a tensor or a sequence of shards (each cut on its own: no window spans two).
    ``max_windows``: keep only that many, evenly spaced over all of them (window ``i * total // max_windows``).
    """

    def __init__(self, tokens: Tokens, block_size: int, max_windows: int | None = None) -> None:
        self.tokens, self.block_size = tokens, block_size
        self._sharded = not isinstance(tokens, torch.Tensor)
        lengths = [len(t) for t in tokens] if self._sharded else [len(tokens)]
        self._per = np.array([max(0, (n - 1) // block_size) for n in lengths], dtype=np.int64)
        self._ends = np.cumsum(self._per)
        self.total = int(self._ends[-1]) if len(self._ends) else 0
        self.count = self.total if max_windows is None else min(self.total, max(1, max_windows))

    def __len__(self) -> int:
        return self.count

    def start_of(self, i: int) -> tuple[int, int]:
        """(shard, first token) of window ``i``."""
        g = i if self.count == self.total else i * self.total // self.count
        j = int(np.searchsorted(self._ends, g, side="right"))
        return j, int(g - (self._ends[j] - self._per[j])) * self.block_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.count:
            raise IndexError(f"window {i} of {self.count}")
        j, s = self.start_of(i)
        if self._sharded:
            w = torch.from_numpy(np.array(self.tokens[j][s : s + self.block_size + 1], dtype=np.int64))
        else:
            w = self.tokens[s : s + self.block_size + 1]
        return w[:-1], w[1:]


# ----------------------------------------------------------------------------- the data module


class ShakespeareDataModule(L.LightningDataModule):
    """Tiny Shakespeare (default), any UTF-8 text file, or a prepared dataset folder of any size.

    (The name stays: checkpoints store the data position under it.)

    Args:
        data_dir: where ``input.txt`` / ``gpt2.tiktoken`` live or are downloaded
            to; default ``$TINYLLM_DATA_DIR`` or ``./data``.
        path: train on this UTF-8 text file instead of Tiny Shakespeare, or on a dataset
            folder made by ``python -m tinyllm prepare`` (read window by window: any size). A folder
            brings its tokenizer and splits: tokenizer and val_fraction are then ignored.
        tokenizer: ``char`` (vocabulary = the corpus's characters), ``gpt2`` (GPT-2's BPE) or ``bpe:N``
            (a byte-level BPE of N tokens learned from the training split, stored in every checkpoint).
        block_size: tokens per training window (linked to the model's context).
        batch_size: windows per micro-batch.
        val_batch_size: windows per validation batch (default: batch_size).
        val_fraction: the trailing fraction of the text held out for validation.
        val_tokens: evaluate at most about this many tokens: a larger val split is
            represented by a fixed, evenly spaced subset of its windows (null: all of it).
        seed: seeds the training windows (batch k is a function of seed, rank, k).
        bpe_dropout: with a ``bpe:N`` tokenizer on a text file, cut the training text anew for each pass over
            it: each token splits back into the two its merge joined with this probability, recursively
            (BPE-dropout; validation keeps the one canonical cut). 0: off.
        num_workers: DataLoader worker processes (0 is fastest for this tiny data).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        path: str | None = None,
        tokenizer: str = "char",
        block_size: int = GPTConfig.block_size,  # the model's, which the CLI links here
        batch_size: int = 64,
        val_batch_size: int | None = None,
        val_fraction: float = VAL_FRACTION,
        val_tokens: int | None = 1_048_576,
        seed: int = SEED,
        bpe_dropout: float = 0.0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.prepared = path is not None and is_dataset(path)  # a folder made by `tinyllm prepare`
        spec = parse_tokenizer_spec(tokenizer)  # a misspelt one fails here, before any work (a folder's too)
        spec = None if self.prepared else spec  # a prepared folder trains with its own tokenizer
        if val_tokens is not None and val_tokens < 1:
            raise TinyLLMError(f"data.val_tokens must be at least 1 (or null: the whole split), got {val_tokens}")
        if block_size < 1:  # linked from the model's context: that is the option a user sets
            raise TinyLLMError(f"model.arch.block_size must be at least 1, got {block_size}")
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise TinyLLMError(f"data.batch_size and data.val_batch_size must be at least 1, got {batch_size} and "
                               f"{val_batch_size}")  # fmt: skip
        check_seed(seed, "data.seed")
        if num_workers < 0:
            raise TinyLLMError(f"data.num_workers must be 0 (load in the training process) or more, got {num_workers}")
        if not 0.0 < val_fraction < 1.0:
            raise TinyLLMError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
        if not 0.0 <= bpe_dropout < 1.0:
            raise TinyLLMError(f"data.bpe_dropout must be in [0, 1), got {bpe_dropout}")
        if bpe_dropout and not isinstance(spec, int):  # a prepared folder's spec is None: its tokenizer is its own
            raise TinyLLMError("data.bpe_dropout re-cuts the tokens of a BPE learned from a text file: use it with "
                               "--data.tokenizer bpe:N on a text file, or set it to 0")  # fmt: skip
        self.data_dir, self.path, self.tokenizer_kind = data_dir, path, tokenizer
        self.block_size, self.batch_size = block_size, batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.val_fraction, self.seed, self.num_workers = val_fraction, seed, num_workers
        self.bpe_dropout = bpe_dropout
        self.val_tokens = val_tokens
        self.train_batches_done = 0  # restored from checkpoints: where the training stream resumes
        self.val_bytes_per_token: float | None = None  # set by setup: UTF-8 bytes per val token, for bits per byte
        self._text: str | None = None
        self._tokenizer: Tokenizer | None = None
        self._splits: TokenSplits | None = None
        self._dataset: PreparedDataset | None = None

    # -- corpus and tokenizer (loaded on first use: the CLI needs vocab_size before fit starts)

    def corpus_path(self) -> Path:
        if self.path is not None:
            p = user_path(self.path).resolve()
            if not p.is_file():
                raise TinyLLMError(f"data.path {p} is not a file nor a prepared dataset folder (with meta.json): "
                                   "give a UTF-8 text file, or a folder made by python -m tinyllm prepare")  # fmt: skip
            if is_dataset(p.parent) and (p.name in (META_NAME, TOKENIZER_JSON) or p.suffix == ".bin"):
                raise TinyLLMError(f"data.path {p} is a file of the prepared dataset {p.parent}: give the folder")
            if p.name.lower().endswith((".gz", *JSONL_SUFFIXES)):  # fit would read gzip's bytes, or the JSON syntax
                raise TinyLLMError(f"data.path {p} is a .gz or .jsonl file, which only prepare reads: python -m "
                                   f"tinyllm prepare --inputs {p} --out data/NAME, then --data.path "
                                   "data/NAME")  # fmt: skip
            return p
        return shakespeare_path(self.data_dir)

    def dataset(self) -> PreparedDataset:
        """The prepared folder ``path`` (checked: format version, shards present and whole)."""
        if self._dataset is None:
            self._dataset = open_dataset(str(self.path))
            folder_spec = stored_spec(self._dataset.tokenizer_state())
            if folder_spec != self.tokenizer_kind:  # the folder's tokens were cut by its own: that one is used
                print(f"tinyllm: {self.path} holds {folder_spec} tokens: training with its tokenizer, not "
                      f"data.tokenizer {self.tokenizer_kind}", file=sys.stderr)  # fmt: skip
            split_at = self._dataset.val_fraction
            if split_at is not None and split_at != self.val_fraction:  # prepare split it: fit cannot move it
                print(f"tinyllm: {self.path} was split by prepare (val_fraction {split_at}): that split is used, "
                      f"not a val_fraction of {self.val_fraction}", file=sys.stderr)  # fmt: skip
        return self._dataset

    def _load(self) -> tuple[str, Tokenizer]:
        if self._text is None or self._tokenizer is None:
            self._text = read_corpus(self.corpus_path())
            train_text = split_text(self._text, self.val_fraction)[0]
            self._tokenizer = build_tokenizer(self.tokenizer_kind, self._text, resolve_data_dir(self.data_dir),
                                              train_text=train_text)  # fmt: skip
        return self._text, self._tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        if self.prepared:
            if self._tokenizer is None:
                state = self.dataset().tokenizer_state()
                self._tokenizer = tokenizer_from_state(state, resolve_data_dir(self.data_dir))
            return self._tokenizer
        return self._load()[1]

    @property
    def vocab_size(self) -> int:
        return self.dataset().vocab_size if self.prepared else self.tokenizer.vocab_size

    @property
    def tokenizer_state(self) -> dict[str, Any]:
        return self.dataset().tokenizer_state() if self.prepared else self.tokenizer.state()

    def splits(self) -> TokenSplits:
        """The train/val tokens of a text file (a prepared folder has shards instead: see setup)."""
        if self.prepared:
            raise TinyLLMError(f"data.path {self.path} is a prepared dataset: its tokens are in shards")
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
        if self.prepared:
            self._shards()  # check the folder once, before every process maps it
        else:
            self.splits()  # download and tokenize once, on one process

    def _shards(self) -> tuple[Sequence[np.ndarray], Sequence[np.ndarray]]:
        ds = self.dataset()
        train, val = ds.shards("train"), ds.shards("val")
        for name, shards, least in (("train", train, self.block_size + 1), ("val", val, self.block_size + 1)):
            if max(shards.lengths()) < least:
                # Windows never cross shards: enough tokens in small shards need larger shards, not more text.
                fix = ("prepare it again with a larger --shard_tokens" if sum(shards.lengths()) >= least else
                       "prepare more text")  # fmt: skip
                raise TinyLLMError(
                    f"no {name} shard of {self.path} holds {least} tokens, too few for block_size={self.block_size}: "
                    f"{fix}, or use a smaller block_size"
                )
        return train, val

    def setup(self, stage: str | None = None) -> None:
        # The token ids of each split: one tensor, or (a prepared folder) its shards' memory maps,
        # of which nothing is read until a window is indexed, in every process.
        if self.prepared:
            self.train_ids, self.val_ids = self._shards()
            ds = self.dataset()
            self.val_bytes_per_token = ds.split_bytes("val") / ds.split_tokens("val")
            return
        splits = self.splits()
        self.train_ids = torch.from_numpy(splits.train.astype(np.int64))
        self.val_ids = torch.from_numpy(splits.val.astype(np.int64))
        val_text = split_text(self._load()[0], self.val_fraction)[1]
        self.val_bytes_per_token = len(val_text.encode("utf-8")) / len(splits.val)

    def val_windows(self) -> FixedWindows:
        """The validation windows: all of them, or an evenly spaced subset of about ``val_tokens`` tokens."""
        ids, limit = self.val_ids, self.val_tokens
        n = len(ids) if isinstance(ids, torch.Tensor) else sum(len(shard) for shard in ids)
        return FixedWindows(ids, self.block_size, None if limit is None or n <= limit else limit // self.block_size)

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        stream = (self.block_size, self.batch_size, self.seed, rank, self.train_batches_done)
        if self.bpe_dropout:
            tokenizer = self.tokenizer
            assert isinstance(tokenizer, BPETokenizer)  # __init__ allows bpe_dropout with bpe:N only
            windows = ResegmentedWindows(self.train_ids, tokenizer.merge_parents(), self.bpe_dropout, *stream)
        else:
            windows = RandomWindows(self.train_ids, *stream)
        # batch_size=None: the dataset already yields whole batches. A private generator keeps the
        # loader from drawing on the global RNG, which drives dropout and must resume exactly.
        return DataLoader(windows, batch_size=None, num_workers=self.num_workers, generator=torch.Generator())

    def val_dataloader(self) -> DataLoader:
        windows = self.val_windows()
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            # Each process takes every world_size-th window and no window twice.
            sampler = unrepeated_sampler(windows, self.trainer.world_size, self.trainer.global_rank)
        return DataLoader(windows, batch_size=self.val_batch_size, shuffle=False, sampler=sampler,
                          num_workers=self.num_workers, generator=torch.Generator())  # fmt: skip

    # -- resume: the data position is the number of training batches consumed

    def state_dict(self) -> dict[str, Any]:
        done = self.train_batches_done
        if self.trainer is not None:
            done = training_batches_processed(self.trainer)
        return {DATA_POSITION: done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_batches_done = int(state_dict.get(DATA_POSITION, 0))
