"""The prepared-dataset folder: token shards and ``meta.json`` (written by ``python -m tinyllm prepare``).

Layout of ``data/NAME/``::

    meta.json            what the folder holds (below); written last
    train_000000.bin     training tokens, raw little-endian uint16 (uint32 when the vocabulary exceeds 65,536)
    train_000001.bin     ... one file per ``shard_tokens`` tokens
    val_000000.bin       validation tokens, the same way
    tokenizer.json       bpe only: the Hugging Face tokenizer (meta.json refers to it)

A shard is a headerless array: ``np.memmap(path, dtype=meta["dtype"], mode="r")`` maps it without loading it;
training reads each window's bytes with ``os.pread`` (:class:`ShardFile`).
Each split is one token stream cut into consecutive shards; documents inside it are separated as
``meta["separator"]`` says. ``meta.json`` holds a :class:`DatasetMeta`.

Plain numpy and json: no torch, no Lightning.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypedDict

import numpy as np

from tinyllm.core.tokenizers import stored_spec, stored_vocab_size
from tinyllm.errors import TinyLLMError
from tinyllm.files import user_path

FORMAT = "tinyllm-tokens"
VERSION = 1
META_NAME = "meta.json"
TOKENIZER_JSON = "tokenizer.json"
TEXT_SUFFIXES = (".txt", ".txt.gz")  # what prepare reads, in any case (.TXT too): plain text, one document
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")  # one JSON document a line
PREPARE_AGAIN = "prepare the dataset again"  # what a damaged folder's errors advise
SPLITS = ("train", "val")


class DatasetMeta(TypedDict):
    """meta.json: what a prepared folder holds. ``sources`` and ``options`` together say whether a folder
    holds the dataset a ``prepare`` command would make (and so has nothing to redo)."""

    format: str  # FORMAT
    version: int  # VERSION: a reader refuses other versions
    tokenizer: dict[str, Any]  # its state(); a bpe's tokenizer_json is in TOKENIZER_JSON, named by tokenizer_json_file
    vocab_size: int
    eot_id: int | None  # the end-of-text token between documents, when the tokenizer has one
    dtype: str  # the shards' token type: uint16 or uint32
    separator: str | None  # between a split's documents: the end-of-text token's name, or text; None in one text
    split_rule: str  # "position" (one text, cut at val_fraction) or "documents" (whole documents per split)
    # Per split: tokens, bytes (UTF-8 bytes of its text, separators included when they are text, end-of-text
    # tokens not: for bits per byte), documents, and shards (each a file and its tokens).
    splits: dict[str, dict[str, Any]]
    sources: list[dict[str, Any]]  # each input file as stored: name, sha256, bytes
    options: dict[str, Any]  # what prepare was asked for


def train_chars(n_chars: int, val_fraction: float) -> int:
    """How many leading characters of a single text train: the rest, its last ``val_fraction``, validate
    (``fit`` on a text file and ``prepare`` of one document cut it at the same place)."""
    return int(n_chars * (1.0 - val_fraction))


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """A single text's training part and its validation part, cut where ``train_chars`` says."""
    n_train = train_chars(len(text), val_fraction)
    return text[:n_train], text[n_train:]


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits, else uint32; little-endian whatever the machine."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def dtype_name(dtype: np.dtype) -> str:
    return {np.dtype("<u2"): "uint16", np.dtype("<u4"): "uint32"}[np.dtype(dtype)]


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.bin"


def is_dataset(path: str | Path) -> bool:
    """Does ``path`` look like a prepared dataset folder (a folder with a meta.json)?"""
    p = user_path(path)
    return p.is_dir() and (p / META_NAME).is_file()


# ----------------------------------------------------------------------------- writing


class ShardWriter:
    """Appends one split's tokens to ``split_000000.bin``, ``split_000001.bin``, …, ``shard_tokens`` tokens each.

    Memory holds one write's tokens, never a shard. Files are created only when a token goes in, so no
    shard is empty. ``close`` flushes and fsyncs, and returns ``[{"file", "tokens"}, …]``.
    """

    def __init__(self, folder: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        if shard_tokens < 1:
            raise TinyLLMError(f"shard_tokens must be at least 1, got {shard_tokens}")
        self.folder, self.split, self.dtype, self.shard_tokens = Path(folder), split, np.dtype(dtype), shard_tokens
        self.shards: list[dict[str, Any]] = []
        self._file: BinaryIO | None = None
        self.tokens = 0

    @property
    def current_path(self) -> Path:
        return self.folder / shard_name(self.split, max(0, len(self.shards) - 1))

    def write(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids)
        if ids.size and int(ids.max()) > np.iinfo(self.dtype).max:
            raise ValueError(f"token id {int(ids.max())} does not fit in {dtype_name(self.dtype)}")
        ids = ids.astype(self.dtype, copy=False)
        while ids.size:
            if self._file is None or self.shards[-1]["tokens"] >= self.shard_tokens:
                self._next_shard()
            room = self.shard_tokens - self.shards[-1]["tokens"]
            part, ids = ids[:room], ids[room:]
            self._file.write(part.tobytes())  # type: ignore[union-attr]
            self.shards[-1]["tokens"] += int(part.size)
            self.tokens += int(part.size)

    def _next_shard(self) -> None:
        self._close_file()
        self.shards.append({"file": shard_name(self.split, len(self.shards)), "tokens": 0})
        self._file = open(self.folder / self.shards[-1]["file"], "xb")

    def _close_file(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.flush()
                os.fsync(f.fileno())
            finally:
                f.close()

    def close(self) -> list[dict[str, Any]]:
        self._close_file()
        return self.shards

    def abort(self) -> None:
        """Close without caring about errors (the folder is about to be removed)."""
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass


def meta_bytes(meta: dict[str, Any]) -> bytes:
    """meta.json's bytes: sorted keys, so the same dataset always gives the same file."""
    return (json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    with open(Path(folder) / META_NAME, "xb") as f:
        f.write(meta_bytes(meta))
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- reading


class PreparedDataset:
    """A prepared folder, checked: its meta.json, and its shards, read window by window."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = path, meta

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def val_fraction(self) -> float | None:
        """The share ``prepare`` held out for validation (None in a folder that does not record it)."""
        return self.meta.get("options", {}).get("val_fraction")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype({"uint16": "<u2", "uint32": "<u4"}[self.meta["dtype"]])

    def tokenizer_state(self) -> dict[str, Any]:
        """The tokenizer's ``state()`` (for bpe, with ``tokenizer_json`` read back from tokenizer.json)."""
        state = dict(self.meta["tokenizer"])
        file = state.pop("tokenizer_json_file", None)
        if file is not None:
            try:
                state["tokenizer_json"] = (self.path / file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                where = self.path / file
                raise TinyLLMError(f"{where} cannot be read ({_why(e)}): {PREPARE_AGAIN}") from None
        return state

    def split_tokens(self, split: str) -> int:
        return int(self.meta["splits"][split]["tokens"])

    def split_bytes(self, split: str) -> int:
        return int(self.meta["splits"][split]["bytes"])

    def shards(self, split: str) -> Shards:
        """The split's shards, in order (nothing is read until a window is asked for)."""
        files = [self.path / s["file"] for s in self.meta["splits"][split]["shards"]]
        return Shards(files, self.dtype, self.vocab_size)


class ShardFile:
    """One shard, its tokens read on demand with ``os.pread``: only the windows asked for are read.

    The file is the headerless array ``np.memmap`` maps, but a mapping is not used to read it: on each
    page fault the kernel also maps the neighbouring cached pages ("fault-around", 64 KB), and those
    count in the process's resident memory. Reading 200 random windows per evaluation and step that
    way added about 350 MB of resident memory on a 1 GB corpus; a read of the window's bytes adds none.
    """

    def __init__(self, path: Path, dtype: np.dtype, vocab_size: int | None = None) -> None:
        self.path, self.dtype, self.vocab_size = Path(path), np.dtype(dtype), vocab_size
        self._len = self.path.stat().st_size // self.dtype.itemsize
        self._fd: int | None = None

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, key: slice | int) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[int(key) : int(key) + 1][0]
        start, stop, step = key.indices(self._len)
        if step != 1:
            raise ValueError("a shard is read in contiguous windows only")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        size = self.dtype.itemsize
        window = np.frombuffer(os.pread(self._fd, max(0, stop - start) * size, start * size), dtype=self.dtype)
        if self.vocab_size is not None and window.size and int(window.max()) >= self.vocab_size:
            # A damaged shard would otherwise surface as an IndexError deep inside the embedding.
            raise TinyLLMError(f"{self.path} holds token id {int(window.max())} near token {start}, beyond the "
                               f"vocabulary of {self.vocab_size}: the shard is damaged; "
                               f"{PREPARE_AGAIN}")  # fmt: skip
        return window

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "dtype": self.dtype, "vocab_size": self.vocab_size}  # a descriptor does not travel

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["dtype"], state.get("vocab_size"))

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


class Shards(Sequence):
    """A split's shard files (:class:`ShardFile`), opened on first use.

    Pickles as its paths, so DataLoader workers started by spawn or forkserver open the same
    files instead of copying them.
    """

    def __init__(self, paths: list[Path], dtype: np.dtype, vocab_size: int | None = None) -> None:
        self.paths, self.dtype, self.vocab_size = [Path(p) for p in paths], np.dtype(dtype), vocab_size
        self._files: list[ShardFile] | None = None

    def _open(self) -> list[ShardFile]:
        if self._files is None:
            self._files = [ShardFile(p, self.dtype, self.vocab_size) for p in self.paths]
        return self._files

    def __getitem__(self, i: int) -> ShardFile:  # type: ignore[override]
        return self._open()[i]

    def __len__(self) -> int:
        return len(self.paths)

    def lengths(self) -> list[int]:
        return [len(f) for f in self._open()]

    def __getstate__(self) -> dict[str, Any]:
        return {"paths": self.paths, "dtype": self.dtype, "vocab_size": self.vocab_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.paths, self.dtype, self._files = state["paths"], state["dtype"], None
        self.vocab_size = state.get("vocab_size")


def _why(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e).splitlines()[0][:120]


def read_meta(path: str | Path, fix: str = PREPARE_AGAIN) -> dict[str, Any]:
    """meta.json of the folder ``path``, parsed; one-line errors, ``fix`` ending those for a damaged file."""
    folder = user_path(path)
    try:
        text = (folder / META_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TinyLLMError(
            f"{folder} is not a prepared dataset (no {META_NAME}): make one with python -m tinyllm prepare"
        ) from None
    except UnicodeDecodeError as e:
        raise TinyLLMError(f"{folder / META_NAME} is corrupt ({_why(e)}): {fix}") from None
    except OSError as e:  # the file may be whole: never advise deleting it for this
        raise TinyLLMError(f"{folder / META_NAME} cannot be read ({_why(e)}): check the file and its "
                           "permissions") from None  # fmt: skip
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise TinyLLMError(f"{folder / META_NAME} is corrupt (not JSON: {e.msg} at line {e.lineno}): "
                           f"{fix}") from None  # fmt: skip
    if not isinstance(meta, dict):
        raise TinyLLMError(f"{folder / META_NAME} is corrupt (not a JSON object): {fix}")
    return meta


def open_dataset(path: str | Path) -> PreparedDataset:
    """The prepared folder ``path``, checked against its meta.json: format version, every shard present and whole,
    a vocabulary its tokenizer decodes."""
    folder = user_path(path).resolve()
    meta = read_meta(folder)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise TinyLLMError(
            f"{folder} holds dataset format {meta.get('format')!r} version {meta.get('version')!r}, this tinyllm "
            f"reads {FORMAT!r} version {VERSION}: prepare it again with this tinyllm (python -m tinyllm prepare)"
        )
    try:
        dtype = meta["dtype"]
        if dtype not in ("uint16", "uint32") or not isinstance(meta["vocab_size"], int):
            raise ValueError(f"dtype {dtype!r}")
        if not isinstance(meta["tokenizer"], dict) or "kind" not in meta["tokenizer"]:
            raise ValueError("no tokenizer")
        if not isinstance(meta["tokenizer"].get("tokenizer_json_file", ""), str):
            raise ValueError("tokenizer_json_file is not a file name")
        itemsize = np.dtype(dtype).itemsize
        expected = []
        for split in SPLITS:
            info = meta["splits"][split]
            counted = 0
            for s in info["shards"]:
                name, n = s["file"], int(s["tokens"])
                if Path(name).name != name or n < 1:
                    raise ValueError(f"shard entry {s!r}")
                expected.append((name, n * itemsize))
                counted += n
            if counted != int(info["tokens"]) or counted == 0:
                raise ValueError(f"{split} token counts")
            int(info["bytes"])
    except (KeyError, TypeError, ValueError, OverflowError) as e:  # Overflow: int(Infinity)
        raise TinyLLMError(f"{folder / META_NAME} is corrupt or incomplete ({type(e).__name__}: {e}): "
                           f"{PREPARE_AGAIN}") from None  # fmt: skip
    for name, size in expected:
        try:
            actual = (folder / name).stat().st_size
        except FileNotFoundError:
            raise TinyLLMError(f"{folder / name} is missing: the dataset is incomplete, prepare it again") from None
        if actual != size:
            raise TinyLLMError(
                f"{folder / name} has {actual:,} bytes, meta.json says {size:,}: "
                "the dataset is damaged, prepare it again"
            )
    dataset = PreparedDataset(folder, meta)
    state = dataset.tokenizer_state()
    try:
        ids = stored_vocab_size(state, fix=PREPARE_AGAIN)
    except TinyLLMError as e:  # the tokenizer's own words do not say where it is stored
        raise TinyLLMError(f"{folder / meta['tokenizer'].get('tokenizer_json_file', META_NAME)}: {e}") from None
    if ids != dataset.vocab_size:  # a model gets meta.json's vocabulary: every id it can sample must decode
        raise TinyLLMError(f"{folder / META_NAME} says vocab_size {dataset.vocab_size:,}, its {stored_spec(state)} "
                           f"tokenizer has {ids:,} ids: the file was edited; {PREPARE_AGAIN}")  # fmt: skip
    return dataset
