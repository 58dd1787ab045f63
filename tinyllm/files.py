"""The two files tinyllm needs, found locally or downloaded once and verified.

* ``input.txt``: Tiny Shakespeare (Karpathy's char-rnn corpus).
* ``gpt2.tiktoken``: GPT-2's BPE merge ranks in tiktoken's format (= r50k_base).

Both live in the data directory: an explicit ``data_dir``, else the
``TINYLLM_DATA_DIR`` environment variable, else ``./data``. Downloads are
written to a temporary file, checked against a pinned sha256 and only then
renamed into place, so a half-finished download is never mistaken for data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyllm.errors import TinyLLMError


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    sha256: str


SHAKESPEARE = RemoteFile(
    "input.txt",
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)
GPT2_RANKS = RemoteFile(
    "gpt2.tiktoken",
    "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",
    "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
)
DOWNLOAD_TIMEOUT_S = 30


def user_path(path: str | Path) -> Path:
    """A path as the user wrote it, with ``~`` as their home: in a YAML value, or after ``--opt=``, no shell
    expands it. ``~name`` of no known user is one line, not Python's RuntimeError."""
    try:
        return Path(path).expanduser()
    except RuntimeError as e:  # user_path("~nobody"): "Could not determine home directory"
        raise TinyLLMError(f"{path}: {e}; write the path without ~, or as ~/...") from None


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """``data_dir``, else ``$TINYLLM_DATA_DIR``, else ``./data`` (absolute)."""
    chosen = data_dir or os.environ.get("TINYLLM_DATA_DIR") or "data"
    return user_path(chosen).resolve()


def cache_dirs(near: Path | None = None) -> list[Path]:
    """Where tinyllm keeps what it can rebuild (encoded tokens, the precision probe's answers), in order of preference.

    ``$TINYLLM_CACHE_DIR`` alone when set; else a ``.tinyllm-cache`` folder beside ``near`` (the corpus, so
    a cache travels with its data), then the user's cache folder (``$XDG_CACHE_HOME/tinyllm``).
    """
    if os.environ.get("TINYLLM_CACHE_DIR"):
        return [Path(os.environ["TINYLLM_CACHE_DIR"])]
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinyllm"
    return ([near.parent / ".tinyllm-cache"] if near is not None else []) + [user_cache]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(path: Path, value: Any) -> None:
    """A run's record (its figures, its arguments) as JSON, written whole or not at all."""
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def read_record(path: Path, kind: type | tuple[type, ...] = object, keys: tuple[str, ...] = ()) -> Any:
    """A record :func:`write_record` wrote, of ``kind`` (with ``keys``, for a dict); one line when it was damaged
    (an older, non-atomic write cut short) or is not what tinyllm wrote there (edited by hand)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise TinyLLMError(f"{path} is damaged ({str(e)[:80]}): delete it to measure that run again") from None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    a_bool_as_number = isinstance(value, bool) and not {bool, object} & set(kinds)  # True is an int to isinstance
    missing_keys = keys and not (isinstance(value, dict) and all(k in value for k in keys))
    if not isinstance(value, kind) or a_bool_as_number or missing_keys:
        raise TinyLLMError(f"{path} is damaged (not the record tinyllm writes there): delete it to measure that run "
                           "again")  # fmt: skip
    return value


def check_writable_folder(folder: Path, option: str) -> None:
    """Prove that ``folder`` can be created and take a file, before any work that would write there.

    A folder the operating system refuses (read-only, under /proc, below a file) fails here in one line
    that names it, the cause and the option to change, not in a traceback after minutes of work. The
    folders it had to create are removed again: a command that fails later leaves nothing behind.
    """
    folder = user_path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"\0")
            probe.flush()
    except OSError as e:
        raise TinyLLMError(f"cannot write in {folder} ({e.strerror or e}): choose another {option}") from None
    finally:
        for path in created:
            with contextlib.suppress(OSError):
                path.rmdir()


def umask() -> int:
    """The process's file-creation mask (read without changing it for longer than an instant)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def verify(path: Path, remote: RemoteFile) -> Path:
    digest = sha256_of(path)
    if digest != remote.sha256:
        raise TinyLLMError(
            f"{path} has sha256 {digest[:12]}…, expected {remote.sha256[:12]}… "
            f"(corrupt or a different file): delete it and run again to re-download"
        )
    return path


def download(remote: RemoteFile, dest: Path, chosen: bool = False) -> Path:
    """Fetch ``remote`` into ``dest`` (atomic, checksum verified) or explain what to do by hand.

    ``chosen``: the data directory was an option (``--data_dir``), which the advice then names, not the variable.
    """
    setting = "give the data_dir option" if chosen else "set TINYLLM_DATA_DIR to"
    hint = f"download {remote.url} to {dest} (sha256 {remote.sha256[:12]}…) or {setting} a folder holding {remote.name}"
    try:
        with urllib.request.urlopen(remote.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except OSError as e:  # URLError, timeouts and refused connections are all OSErrors
        raise TinyLLMError(f"{remote.name} is missing and could not be downloaded ({e}): {hint}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != remote.sha256:
        raise TinyLLMError(f"downloaded {remote.name} has sha256 {digest[:12]}…, expected {remote.sha256[:12]}…: "
                           f"{hint}")
    try:
        atomic_write_bytes(dest, data)
    except OSError as e:
        raise TinyLLMError(f"cannot save {remote.name} to {dest.parent} ({e.strerror or e}): "
                           f"{setting} a writable folder") from None  # fmt: skip
    return dest


def ensure_file(remote: RemoteFile, data_dir: str | Path | None = None) -> Path:
    """The verified local copy of ``remote`` in the data directory, downloading it if missing."""
    path = resolve_data_dir(data_dir) / remote.name
    if path.exists():
        return verify(path, remote)
    return download(remote, path, chosen=bool(data_dir))


def shakespeare_path(data_dir: str | Path | None = None) -> Path:
    return ensure_file(SHAKESPEARE, data_dir)


def _tiktoken_cache_path(url: str) -> Path:
    """Where tiktoken itself caches ``url`` (see tiktoken.load.read_file_cached)."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    base = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "data-gym-cache"
    return base / hashlib.sha1(url.encode()).hexdigest()


def gpt2_ranks_path(data_dir: str | Path | None = None) -> Path:
    """GPT-2 BPE ranks: the data directory, then tiktoken's cache, then a download."""
    local = resolve_data_dir(data_dir) / GPT2_RANKS.name
    if local.exists():
        return verify(local, GPT2_RANKS)
    cached = _tiktoken_cache_path(GPT2_RANKS.url)
    if cached.exists() and sha256_of(cached) == GPT2_RANKS.sha256:
        return cached
    return download(GPT2_RANKS, local, chosen=bool(data_dir))


def fmt_bytes(n: int) -> str:
    """A byte count for people: 1.2 MB, 830 kB, 12 B."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
