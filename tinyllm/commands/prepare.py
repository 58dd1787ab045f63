"""``python -m tinyllm prepare``: turn any text corpus into memory-mapped token shards.

    python -m tinyllm prepare --inputs data/input.txt --out data/shakespeare --tokenizer char
    python -m tinyllm prepare --inputs corpus/ --out data/web --tokenizer bpe:8192
    python -m tinyllm prepare --inputs '[a.jsonl.gz,b.jsonl.gz]' --out data/mix --tokenizer gpt2
    python -m tinyllm fit --config configs/cpu.yaml --data.path data/web

The rules (tinyllm/core/dataset.py describes the folder it writes):

* **Documents.** A text file (``.txt``, or any name not ending in ``.jsonl``) is one document; a folder
  contributes its ``.txt`` and ``.jsonl`` files, recursively, in sorted order (hidden names skipped); each line
  of a ``.jsonl`` file is one document, the string in its ``text_field``. ``.gz`` versions are read as they
  are. Empty documents are skipped.
* **Separators.** Inside a split, documents are separated by the tokenizer's end-of-text token
  (``<|endoftext|>``, for gpt2 and bpe); char has none, so its documents are separated by a blank line
  (``"\\n\\n"``, which adds ``"\\n"`` to the vocabulary if the corpus lacks it). Nothing precedes the first
  document or follows the last, so a corpus of one document is its text's tokens and nothing else.
* **Validation split.** One document (a single text file): by position, as ``fit`` on a text file does:
  the first ``1 - val_fraction`` of its characters train, the rest validate, each tokenized on its own, so
  ``prepare --inputs input.txt --tokenizer char`` holds exactly the tokens ``fit --data.path input.txt``
  uses. Several documents: whole documents, spread evenly: document i (0-based) validates when
  ``int((i + 1) * val_fraction) > int(i * val_fraction)`` (every 10th for 0.1), the last one if that
  picks none.
* **Tokenizers.** ``char`` (the corpus's characters), ``gpt2`` (GPT-2's BPE) or ``bpe:N`` (a byte-level BPE of
  N tokens trained here on the training split only, then saved as tokenizer.json).
* **Bounded memory, all cores.** Inputs are read twice (three times for bpe): a scan that checks every
  file (UTF-8, JSON, the text field) and hashes it before anything is written, then tokenization in pieces of
  about a million characters on ``workers`` threads (the tokenizers release the GIL), written to the shards
  in order as they come. Memory holds two batches of pieces per thread (about 20 MB each), and the largest
  document of a ``.jsonl`` file; it does not grow with the corpus (measured: +110 MB for 37 MB and for 144 MB
  of text, char, 2 threads). A long text document is cut into pieces after a newline between two
  non-blank characters (else before a space between two), where GPT-2's pre-tokenization splits anyway, so
  the tokens are those of the whole text; a piece with neither (a megabyte without a space) is cut where it
  must be, which can change a token or two there.
* **Atomic, deterministic.** The folder is built as ``.NAME.partial-PID-XXXXXX`` beside ``--out`` and renamed
  into place when complete; an error or Ctrl-C removes it, and a killed run's leftovers are removed by the
  next. The same inputs and options give the same bytes (whatever ``workers``). An existing ``--out`` is
  refused, unless it holds exactly the dataset asked for (same inputs by sha256, same options): then there
  is nothing to do.
"""

from __future__ import annotations

import codecs
import errno
import gzip
import hashlib
import io
import itertools
import json
import os
import secrets
import shutil
import sys
import time
import unicodedata
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tinyllm.core.dataset import (
    FORMAT, JSONL_SUFFIXES, META_NAME, SPLITS, TEXT_SUFFIXES, TOKENIZER_JSON, VERSION, DatasetMeta, ShardWriter,
    dtype_name, read_meta, token_dtype, write_meta, open_dataset, train_chars,
)  # fmt: skip
from tinyllm.core.defaults import VAL_FRACTION
from tinyllm.core.tokenizers import EOT, CharTokenizer, Tokenizer, parse_tokenizer_spec, tokenizer_from_state, train_bpe
from tinyllm.errors import TinyLLMError
from tinyllm.files import fmt_bytes, user_path

READ_BYTES = 1 << 20  # bytes read from a file at a time
PIECE_CHARS = 1 << 20  # a long document is tokenized in pieces of about this many characters
TASK_CHARS = 1 << 20  # pieces go to a worker thread in batches of about this much text (~10 MB while encoded)
CHAR_SEPARATOR = "\n\n"
DEFAULT_SHARD_TOKENS = 100_000_000


def prepare(
    inputs: str | list[str],
    out: str,
    tokenizer: str = "char",
    val_fraction: float = VAL_FRACTION,
    text_field: str = "text",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    workers: int | None = None,
    data_dir: str | None = None,
) -> None:
    """Tokenize a corpus into a dataset folder of memory-mapped token shards, for fit --data.path.

    Args:
        inputs: a text file, a folder (its .txt and .jsonl files, recursively), or a .jsonl file (one document
            a line), .gz versions too; several as a list: --inputs '[a.jsonl,b.jsonl]' or --inputs+ a --inputs+ b.
        out: the dataset folder to create, e.g. data/NAME (refused if it exists, unless it holds this very dataset).
        tokenizer: char, gpt2, or bpe:N (a byte-level BPE of N tokens trained on the training split).
        val_fraction: held out for validation: the last fraction of a single document's characters, or every
            1/val_fraction-th document of several.
        text_field: the field of each .jsonl line that holds its text.
        shard_tokens: tokens per shard file (the last one of each split holds the rest).
        workers: threads that tokenize (default: every core; one for char, which encodes in Python under the GIL).
        data_dir: where gpt2.tiktoken is (or is downloaded to); default $TINYLLM_DATA_DIR or ./data.
    """
    started = time.perf_counter()
    spec = parse_tokenizer_spec(tokenizer)
    if not 0.0 < val_fraction < 1.0:
        raise TinyLLMError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if isinstance(shard_tokens, bool) or shard_tokens < 1:
        raise TinyLLMError(f"shard_tokens must be at least 1, got {shard_tokens}")
    # tiktoken and tokenizers release the GIL, so threads add speed; the char tokenizer is Python and does not:
    # on 2 cores (Intel Xeon), 1 GB of text took 90 s on one thread and 126 s on two.
    workers = workers or (1 if spec == "char" else available_cores())
    if workers < 1:
        raise TinyLLMError(f"workers must be at least 1, got {workers}")
    out_path = user_path(out)
    if not out_path.name or out_path.name in (".", ".."):
        raise TinyLLMError(f"--out {out!r} names no folder: give a path such as data/NAME")
    existing = check_out(out_path)
    sources = expand_inputs([inputs] if isinstance(inputs, str) else list(inputs))

    scan = scan_corpus(sources, text_field, collect_chars=spec == "char")
    options = {"tokenizer": tokenizer, "val_fraction": val_fraction, "text_field": text_field,
               "shard_tokens": shard_tokens}  # fmt: skip
    if existing:
        already_prepared(out_path, scan, options)
        return
    remove_stale_partials(out_path)
    partial = make_partial(out_path)
    try:
        meta = build(partial, scan, spec, options, workers, data_dir)
        try:
            os.rename(partial, out_path)
        except OSError as e:
            raise TinyLLMError(f"cannot move the finished dataset to {out_path} ({e.strerror}): "
                               "choose another --out") from None  # fmt: skip
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    summary(out_path, meta, scan.text_bytes, time.perf_counter() - started)


# ----------------------------------------------------------------------------- options


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------- the output folder


def check_out(out: Path) -> bool:
    """Refuse an --out that exists, unless it may hold a prepared dataset (True: compare it after the scan)."""
    if not out.exists():
        if out.parent.exists() and not out.parent.is_dir():
            raise TinyLLMError(f"cannot create {out}: {out.parent} is not a folder; choose another --out")
        return False
    if not out.is_dir():
        raise TinyLLMError(f"{out} exists and is not a folder: choose another --out, or delete it")
    if not (out / META_NAME).is_file():
        raise TinyLLMError(f"{out} already exists (and is not a prepared dataset): choose another --out, or delete it")
    return True


def already_prepared(out: Path, scan: Scan, options: dict[str, Any]) -> None:
    meta = read_meta(out, fix=f"delete {out} and prepare it again")  # preparing into it again would land here
    same = (meta.get("format") == FORMAT and meta.get("version") == VERSION and meta.get("sources") == scan.scanned
            and meta.get("options") == options)  # fmt: skip
    if not same:
        raise TinyLLMError(f"{out} already holds another prepared dataset (other inputs, options or format): "
                           "choose another --out, or delete it to prepare it again")  # fmt: skip
    try:
        open_dataset(out)
    except TinyLLMError as e:
        raise TinyLLMError(f"{out} holds this dataset, but damaged ({e}); delete it and prepare again") from None
    print(f"{out} already holds this prepared dataset (same inputs and options): nothing to do")


def partial_prefix(out: Path) -> str:
    return f".{out.name}.partial-"


def remove_stale_partials(out: Path) -> None:
    """Remove what a killed prepare (SIGKILL, power cut) of the same --out left: its process is gone."""
    if not out.parent.is_dir():
        return
    for p in out.parent.glob(partial_prefix(out) + "*"):
        pid = p.name[len(partial_prefix(out)) :].split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            print(f"tinyllm: removed {p.name}, left by an interrupted prepare", file=sys.stderr)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, someone else's
        return True
    return True


def make_partial(out: Path) -> Path:
    partial = out.parent / f"{partial_prefix(out)}{os.getpid()}-{secrets.token_hex(3)}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
    except OSError as e:
        where = partial.parent / out.name
        raise TinyLLMError(f"cannot create {where} ({e.strerror}): choose a writable --out") from None
    return partial


@contextmanager
def writing(path: Callable[[], Path] | Path) -> Iterator[None]:
    """Turn an OSError while writing the dataset into one line that names the file and the cause."""
    try:
        yield
    except OSError as e:
        where = path() if callable(path) else path
        hint = "free some space, or choose another --out" if e.errno in (errno.ENOSPC, errno.EDQUOT) else \
            "choose another --out"  # fmt: skip
        raise TinyLLMError(f"cannot write {where} ({e.strerror or e}): {hint}; nothing was prepared") from None


# ----------------------------------------------------------------------------- reading the inputs


@dataclass
class Source:
    path: Path
    name: str  # as recorded in meta.json: the file's name, or folder/relative/path
    jsonl: bool
    gz: bool
    size: int = 0
    sha256: str = ""


def input_kind(name: str) -> tuple[bool, bool]:
    """(one JSON document a line?, gzip?) of a file named ``name``, in any case."""
    low = name.lower()
    return low.endswith(JSONL_SUFFIXES), low.endswith(".gz")


def expand_inputs(inputs: list[str]) -> list[Source]:
    if not inputs:
        raise TinyLLMError("no inputs: give --inputs FILE_OR_FOLDER")
    sources = []
    for arg in inputs:
        p = user_path(arg)
        if p.is_dir():
            root = p.resolve()
            found = []
            for f in root.rglob("*"):
                rel = f.relative_to(root)
                if any(part.startswith(".") for part in rel.parts) or not f.is_file():
                    continue
                if f.name.lower().endswith(TEXT_SUFFIXES + JSONL_SUFFIXES):
                    found.append((rel.as_posix(), f))
            for rel, f in sorted(found):
                sources.append(Source(f, f"{root.name}/{rel}", *input_kind(f.name)))
        elif p.is_file():
            sources.append(Source(p.resolve(), p.name, *input_kind(p.name)))
        else:
            raise TinyLLMError(f"input {arg} does not exist: give text files, folders or .jsonl files")
    named: dict[Path, str] = {}
    for src in sources:  # a file given twice would be trained on twice, or validated on after training on it
        if src.path in named:
            raise TinyLLMError(f"{src.path} is among the inputs twice (as {named[src.path]} and {src.name}): give "
                               "each file once")  # fmt: skip
        named[src.path] = src.name
    return sources


class HashingReader(io.RawIOBase):
    """A file read once, hashed (sha256) and counted as it goes."""

    def __init__(self, path: Path, on_read: Callable[[int], None] | None = None) -> None:
        self.f = open(path, "rb", buffering=0)
        self.sha = hashlib.sha256()
        self.on_read = on_read
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.f.readinto(b)
        if n:
            self.sha.update(memoryview(b)[:n])
            self.count += n
            if self.on_read:
                self.on_read(n)
        return n

    def close(self) -> None:
        self.f.close()
        super().close()

    def drain(self) -> None:
        while self.read(READ_BYTES):
            pass


READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError; a truncated .gz an EOFError


def unreadable(src: Source, e: BaseException) -> TinyLLMError:
    gz_damage = src.gz and not isinstance(e, FileNotFoundError)
    what = "not a valid .gz file" if gz_damage else getattr(e, "strerror", None)
    return TinyLLMError(f"cannot read {src.path} ({what or e}): check the input")


@contextmanager
def opened(src: Source, on_read: Callable[[int], None] | None = None,
           ) -> Iterator[tuple[io.BufferedIOBase, HashingReader]]:  # fmt: skip
    """``src`` as a binary stream of its (decompressed) bytes, and the reader that hashes the stored bytes."""
    try:
        raw = HashingReader(src.path, on_read)
    except OSError as e:
        raise TinyLLMError(f"cannot read {src.path} ({e.strerror}): check the input") from None
    try:
        buffered = io.BufferedReader(raw, READ_BYTES)
        yield (gzip.GzipFile(fileobj=buffered, mode="rb") if src.gz else buffered), raw
    except READ_ERRORS as e:
        raise unreadable(src, e) from None
    finally:
        raw.close()


def decoded_chunks(stream: io.BufferedIOBase, src: Source) -> Iterator[str]:
    """The text of a UTF-8 stream, in chunks, checked (an invalid byte's offset is named)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes of the (decompressed) stream before this block
    while True:
        try:  # read here, not inside opened(): a document's chunks are read by whoever iterates them
            block = stream.read(READ_BYTES)
        except READ_ERRORS as e:
            raise unreadable(src, e) from None
        final = not block
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(block, final=final)
        except UnicodeDecodeError as e:
            where = offset - pending + e.start
            what = " of the decompressed text" if src.gz else ""
            raise TinyLLMError(f"{src.path} is not UTF-8 text ({e.reason} at byte {where:,}{what}): "
                               "convert it to UTF-8") from None  # fmt: skip
        offset += len(block)
        if text:
            yield text
        if final:
            return


def jsonl_texts(stream: io.BufferedIOBase, src: Source, text_field: str) -> Iterator[str]:
    offset = 0
    for lineno, line in enumerate(stream, 1):
        start, offset = offset, offset + len(line)
        if not line.strip():
            continue
        try:
            s = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TinyLLMError(f"{src.path} line {lineno} is not UTF-8 ({e.reason} at byte {start + e.start:,}): "
                               "convert it to UTF-8") from None  # fmt: skip
        try:
            record = json.loads(s)
        except json.JSONDecodeError as e:
            raise TinyLLMError(f"{src.path} line {lineno} is not JSON ({e.msg}): each line of a .jsonl file "
                               "must be one JSON object") from None  # fmt: skip
        if not isinstance(record, dict):
            raise TinyLLMError(f"{src.path} line {lineno} is a JSON {type(record).__name__}, not an object: each "
                               f"line of a .jsonl file must be one object with a {text_field!r} field")  # fmt: skip
        if text_field not in record:
            raise TinyLLMError(f"{src.path} line {lineno} has no {text_field!r} field (it has: "
                               f"{', '.join(list(record)[:5])}): name the field with --text_field")  # fmt: skip
        text = record[text_field]
        if not isinstance(text, str):
            raise TinyLLMError(f"{src.path} line {lineno}: {text_field!r} is {json.dumps(text)[:40]}, not a string: "
                               "fix or drop that line")  # fmt: skip
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # JSON's "\ud800" escape: half a UTF-16 pair, which no text holds
            raise TinyLLMError(f"{src.path} line {lineno}: {text_field!r} holds a lone surrogate "
                               f"({text[e.start]!r} at character {e.start:,}), which is not text: fix or drop that "
                               "line") from None  # fmt: skip
        yield text


def documents(src: Source, text_field: str, on_read: Callable[[int], None] | None = None) -> Iterator[Iterator[str]]:
    """The non-empty documents of ``src``, each an iterator of text chunks (exhaust each before the next).

    When the generator is exhausted, ``src.size`` and ``src.sha256`` are those of the stored file.
    """
    with opened(src, on_read) as (stream, raw):
        if src.jsonl:
            for text in jsonl_texts(stream, src, text_field):
                if text:
                    yield iter((text,))
        else:
            chunks = decoded_chunks(stream, src)
            first = next(chunks, None)
            if first is not None:
                yield itertools.chain((first,), chunks)
        raw.drain()  # bytes after a gzip stream's end are part of the file all the same
        src.size, src.sha256 = raw.count, raw.sha.hexdigest()


@dataclass
class Scan:
    """What the first pass learned: the sources (hashed), documents, characters, the text's size."""

    sources: list[Source]
    n_docs: int = 0
    first_doc_chars: int = 0  # the characters of the only document, for a position split
    text_bytes: int = 0
    chars: set[str] | None = None
    scanned: list[dict[str, Any]] = field(default_factory=list)  # source_info() as the scan found it

    def source_info(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "sha256": s.sha256, "bytes": s.size} for s in self.sources]

    @property
    def one_document(self) -> bool:
        return self.n_docs == 1

    def val_documents(self, val_fraction: float) -> Callable[[int], bool]:
        n = self.n_docs
        picked = int(n * val_fraction) > 0  # how many documents the rule picks

        def is_val(i: int) -> bool:
            if int((i + 1) * val_fraction) > int(i * val_fraction):
                return True
            return not picked and i == n - 1

        return is_val


def scan_corpus(sources: list[Source], text_field: str, collect_chars: bool) -> Scan:
    """Read every input once before anything is written: check it, hash it, count its documents and text."""
    scan = Scan(sources, chars=set() if collect_chars else None)
    total = 0
    for s in sources:
        try:
            total += s.path.stat().st_size
        except OSError:
            pass
    with progress(total, "scan", leave=False) as bar:
        for src in sources:
            for doc in documents(src, text_field, bar.update):
                scan.n_docs += 1
                for chunk in doc:
                    if scan.n_docs == 1:
                        scan.first_doc_chars += len(chunk)
                    scan.text_bytes += len(chunk.encode("utf-8"))
                    if scan.chars is not None:
                        scan.chars.update(chunk)
    if scan.n_docs == 0:
        names = ", ".join(str(s.path) for s in sources[:3]) or "the inputs (no .txt or .jsonl files found)"
        raise TinyLLMError(f"no text in {names}: the corpus is empty (a folder contributes its .txt and .jsonl files)")
    scan.scanned = scan.source_info()
    first: dict[str, str] = {}
    for src in sources:  # copies under two names: the validation split may hold text the model trained on
        if src.sha256 in first:
            print(f"tinyllm: {src.name} has the same content as {first[src.sha256]}: both are read", file=sys.stderr)
        first.setdefault(src.sha256, src.name)
    return scan


def progress(total: int | None, desc: str, leave: bool = True) -> tqdm:
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr,
                mininterval=0.5, leave=leave, dynamic_ncols=True)  # fmt: skip


# ----------------------------------------------------------------------------- pieces of text to tokenize


def safe_cut(text: str, limit: int) -> int:
    """A position <= limit where GPT-2's pre-tokenization splits anyway, so both sides tokenize as the whole.

    After a newline that has a non-blank character on each side; else before a space that has; else
    between a letter, a digit and a punctuation mark of different kinds (no apostrophe next to it: "'s" is
    one piece); else ``limit``. Searched in the second half of the text only.
    """
    lo = limit // 2
    i = text.rfind("\n", lo, limit - 1)
    while i > lo:
        if not text[i - 1].isspace() and not text[i + 1].isspace():
            return i + 1
        i = text.rfind("\n", lo, i)
    i = text.rfind(" ", lo, limit - 1)
    while i > lo:
        if not text[i - 1].isspace() and not text[i + 1].isspace():
            return i
        i = text.rfind(" ", lo, i)
    after = _kind(text[limit])
    for i in range(limit, lo, -1):
        before = _kind(text[i - 1])
        if before != after and before and after:
            return i
        after = before
    return limit


def _kind(c: str) -> str:
    """Letter, number or other (punctuation, symbols); "" for blanks and apostrophes, never cut beside."""
    if c.isspace() or c == "'":
        return ""
    category = unicodedata.category(c)[0]
    return category if category in "LN" else "P"


def repiece(chunks: Iterable[str], size: int | None = None) -> Iterator[str]:
    """Re-cut a document's chunks into pieces of at most ``size`` characters, at safe places."""
    size = size or PIECE_CHARS
    carry = ""
    for chunk in chunks:
        carry = carry + chunk if carry else chunk
        while len(carry) > size:
            cut = safe_cut(carry, size)
            yield carry[:cut]
            carry = carry[cut:]
    if carry:
        yield carry


def cut_at(chunks: Iterable[str], n: int) -> Iterator[tuple[str, str]]:
    """(split, chunk): the first ``n`` characters are "train", the rest "val"."""
    seen = 0
    for chunk in chunks:
        if seen >= n:
            yield "val", chunk
        elif seen + len(chunk) <= n:
            yield "train", chunk
        else:
            yield "train", chunk[: n - seen]
            yield "val", chunk[n - seen :]
        seen += len(chunk)


@dataclass
class Piece:
    split: str
    starts_doc: bool  # the first piece of a document (of its part in this split)
    text: str


def pieces(scan: Scan, text_field: str, val_fraction: float, only: str | None = None,
           on_read: Callable[[int], None] | None = None) -> Iterator[Piece]:  # fmt: skip
    """The corpus as pieces in order, each tagged with its split (``only``: that split's pieces alone)."""
    is_val = scan.val_documents(val_fraction)
    i = 0
    for src in scan.sources:
        for doc in documents(src, text_field, on_read):
            if scan.one_document:
                n_train = train_chars(scan.first_doc_chars, val_fraction)
                for split, part in itertools.groupby(cut_at(doc, n_train), key=lambda t: t[0]):
                    if only in (None, split):
                        for j, text in enumerate(repiece(c for _, c in part)):
                            yield Piece(split, j == 0, text)
                    else:
                        for _ in part:
                            pass
            else:
                split = "val" if is_val(i) else "train"
                if only in (None, split):
                    for j, text in enumerate(repiece(doc)):
                        yield Piece(split, j == 0, text)
                else:
                    for _ in doc:
                        pass
            i += 1


def batched(items: Iterable[Piece], chars: int) -> Iterator[list[Piece]]:
    batch: list[Piece] = []
    size = 0
    for item in items:
        batch.append(item)
        size += len(item.text)
        if size >= chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# ----------------------------------------------------------------------------- tokenizing


def make_tokenizer(spec: str | int, scan: Scan, text_field: str, val_fraction: float,
                   data_dir: str | None) -> Tokenizer:  # fmt: skip
    if spec == "char":
        chars = set(scan.chars or ())
        if not scan.one_document:
            chars.update(CHAR_SEPARATOR)
        return CharTokenizer("".join(sorted(chars)))
    if spec == "gpt2":
        return tokenizer_from_state({"kind": "gpt2"}, data_dir)
    with progress(None, f"train bpe:{spec}") as bar:  # the training split's size is known only once read

        def texts() -> Iterator[str]:
            for piece in pieces(scan, text_field, val_fraction, only="train"):
                bar.update(len(piece.text))  # characters: close enough to bytes for a bar
                yield piece.text

        return train_bpe(texts(), spec)


def char_encoder(tok: CharTokenizer) -> Callable[[str], np.ndarray]:
    """CharTokenizer.encode as a table lookup on code points (about 10x faster; the same ids)."""
    cps = np.array([ord(c) for c in tok.chars], dtype=np.int64)
    table = np.full(int(cps.max()) + 1, -1, dtype=np.int32)
    table[cps] = np.arange(len(cps), dtype=np.int32)

    def encode(text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        ids = table[np.minimum(codes, len(table) - 1)]
        if ids.size and (ids.min() < 0 or np.any(cps[ids] != codes)):
            tok.encode(text)  # raises, naming the characters outside the vocabulary
        return ids

    return encode


def batch_encoder(tok: Tokenizer) -> Callable[[list[str]], list[np.ndarray]]:
    """Texts -> arrays of ids (run on worker threads)."""
    if isinstance(tok, CharTokenizer):
        one = char_encoder(tok)
        return lambda texts: [one(t) for t in texts]
    many = getattr(tok, "encode_batch", None)
    if many is not None:
        return lambda texts: [np.array(ids, dtype=np.int64) for ids in many(texts)]
    return lambda texts: [np.array(tok.encode(t), dtype=np.int64) for t in texts]


def encode_task(encode: Callable[[list[str]], list[np.ndarray]], texts: list[str]) -> list[tuple[np.ndarray, int]]:
    return [(ids, len(t.encode("utf-8"))) for ids, t in zip(encode(texts), texts)]


# ----------------------------------------------------------------------------- building the folder


def build(folder: Path, scan: Scan, spec: str | int, options: dict[str, Any], workers: int,
          data_dir: str | None) -> DatasetMeta:  # fmt: skip
    """Tokenize the corpus into ``folder``; the meta.json written, returned."""
    val_fraction, text_field = options["val_fraction"], options["text_field"]
    tok = make_tokenizer(spec, scan, text_field, val_fraction, data_dir)
    dtype = token_dtype(tok.vocab_size)
    eot = tok.eot_id
    if scan.one_document:
        sep_ids, sep_bytes, separator = np.zeros(0, dtype=np.int64), 0, None
    elif eot is not None:
        sep_ids, sep_bytes, separator = np.array([eot], dtype=np.int64), 0, EOT
    else:
        sep_ids = np.array(tok.encode(CHAR_SEPARATOR), dtype=np.int64)
        sep_bytes, separator = len(CHAR_SEPARATOR.encode()), CHAR_SEPARATOR
    writers = {split: ShardWriter(folder, split, dtype, options["shard_tokens"]) for split in SPLITS}
    counts = {split: {"bytes": 0, "documents": 0} for split in SPLITS}
    encode = batch_encoder(tok)

    def store(piece: Piece, ids: np.ndarray, nbytes: int) -> None:
        w, c = writers[piece.split], counts[piece.split]
        with writing(lambda: w.current_path):
            if piece.starts_doc:
                if c["documents"] and sep_ids.size:
                    w.write(sep_ids)
                    c["bytes"] += sep_bytes
                c["documents"] += 1
            w.write(ids)
        c["bytes"] += nbytes

    try:
        with progress(scan.text_bytes, "tokenize") as bar, ThreadPoolExecutor(workers) as pool:
            pending: deque[tuple[list[Piece], Future]] = deque()
            try:
                for batch in batched(pieces(scan, text_field, val_fraction), TASK_CHARS):
                    pending.append((batch, pool.submit(encode_task, encode, [p.text for p in batch])))
                    while len(pending) >= 2 * workers:  # bounded: two batches per thread in flight
                        finish(pending.popleft(), store, bar)
                while pending:
                    finish(pending.popleft(), store, bar)
            except BaseException:
                for _, fut in pending:
                    fut.cancel()
                raise
        shards = {}
        for split, w in writers.items():
            with writing(w.current_path):
                shards[split] = w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    if scan.source_info() != scan.scanned:
        changed = next(s.path for s, info in zip(scan.sources, scan.scanned) if s.sha256 != info["sha256"])
        raise TinyLLMError(f"{changed} changed while it was being prepared: run prepare again when it is stable")
    for split in SPLITS:
        if writers[split].tokens == 0:
            raise TinyLLMError(f"the {split} split is empty: the corpus is too small for val_fraction="
                               f"{val_fraction}; add text or change val_fraction")  # fmt: skip
    state = dict(tok.state())
    if "tokenizer_json" in state:
        with writing(folder / TOKENIZER_JSON), open(folder / TOKENIZER_JSON, "x", encoding="utf-8") as f:
            f.write(state.pop("tokenizer_json"))
        state["tokenizer_json_file"] = TOKENIZER_JSON
    meta = DatasetMeta(
        format=FORMAT,
        version=VERSION,
        tokenizer=state,
        vocab_size=tok.vocab_size,
        eot_id=eot,
        dtype=dtype_name(dtype),
        separator=separator,
        split_rule="position" if scan.one_document else "documents",
        splits={s: {"tokens": writers[s].tokens, **counts[s], "shards": shards[s]} for s in SPLITS},
        sources=scan.scanned,
        options=options,
    )
    with writing(folder / META_NAME):
        write_meta(folder, meta)
    return meta


def finish(item: tuple[list[Piece], Future], store: Callable[[Piece, np.ndarray, int], None], bar: tqdm) -> None:
    batch, fut = item
    for piece, (ids, nbytes) in zip(batch, fut.result()):
        store(piece, ids, nbytes)
        bar.update(nbytes)


def summary(out: Path, meta: dict[str, Any], text_bytes: int, seconds: float) -> None:
    def part(split: str) -> str:
        s = meta["splits"][split]
        n, d = len(s["shards"]), s["documents"]
        return f"{split} {s['tokens']:,} tokens ({d:,} document{'s' * (d != 1)}, {n} shard{'s' * (n != 1)})"

    kind = meta["tokenizer"]["kind"]
    print(f"prepared {out}: {part('train')}, {part('val')}; {kind} vocabulary {meta['vocab_size']:,} "
          f"({meta['dtype']}); {fmt_bytes(text_bytes)} of text in {seconds:.1f} s "
          f"({text_bytes / 1e6 / max(seconds, 1e-9):.1f} MB/s)")  # fmt: skip
    print(f"train on it: python -m tinyllm fit --config CONFIG --data.path {out}")
    share, asked = meta["splits"]["val"]["bytes"] / max(text_bytes, 1), meta["options"]["val_fraction"]
    if meta["split_rule"] == "documents" and share > 2 * asked:  # a few long documents: one of them is a large share
        print(f"tinyllm: validation holds {share:.0%} of the text, not {asked:.0%}: documents are held out whole "
              "(every 1/val_fraction-th, or the last of fewer); join them into one file to split it by position",
              file=sys.stderr)
