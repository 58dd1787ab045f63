"""``python -m tinyllm publish``: upload an exported folder to the Hugging Face Hub.

    python -m tinyllm publish --export_dir exports/quick --repo_id USER/NAME --dry_run true
    hf auth login    # once; or HF_TOKEN=hf_..., or on Colab a secret named HF_TOKEN
    python -m tinyllm publish --export_dir exports/quick --repo_id USER/NAME [--private true]

Before anything goes up, the folder is checked (``tinyllm.formats.folder.check_export``):
every tensor present with the right shape, and a model card that names the
sha256 of these very weights, so a card can never describe another checkpoint.
Only the files ``tinyllm export`` wrote are uploaded; anything else in the
folder stays local. The token is found the way huggingface_hub finds it
(``get_token``): $HF_TOKEN, then the login stored by ``hf auth login``, then
Colab's secret ``HF_TOKEN``. tinyllm never prints or writes it.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tinyllm.errors import TinyLLMError, one_line
from tinyllm.files import fmt_bytes, user_path
from tinyllm.formats.folder import check_export
from tinyllm.formats.hf_layout import FILES, HF_EXTRA

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


@dataclass(frozen=True)
class Upload:
    """What would go up: (file name, size in bytes), and the files left out."""

    folder: Path
    repo_id: str
    files: list[tuple[str, int]]
    left_out: list[str]

    @property
    def total(self) -> int:
        return sum(size for _, size in self.files)


def plan(export_dir: str | Path, repo_id: str) -> Upload:
    """Check the folder and the repo id; list what would be uploaded. Needs no network and no token."""
    if not REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith((".git", "-", ".")):
        raise TinyLLMError(f"--repo_id {repo_id!r} is not a Hub repository id: use USER/NAME (letters, digits, - _ .)")
    folder = user_path(export_dir).resolve()
    cfg = check_export(folder)
    names = [n for n in cfg["tinyllm"].get("files", FILES) if n in FILES]
    files = [(name, (folder / name).stat().st_size) for name in names]
    left_out = sorted(p.name for p in folder.iterdir() if p.name not in names)
    return Upload(folder, repo_id, files, left_out)


def hf_token() -> str:
    """The token huggingface_hub would use ($HF_TOKEN, the stored login, Colab's secret), or a one-line error."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        raise TinyLLMError(f"publish needs huggingface_hub: {HF_EXTRA}") from None
    try:
        token = get_token()
    except Exception as e:  # e.g. a failed OIDC exchange; its message never holds the token
        raise TinyLLMError(f"could not read the Hugging Face token: {one_line(str(e), 150)}") from None
    if not token:
        raise TinyLLMError(
            "no Hugging Face token: run `hf auth login` with a write token from https://huggingface.co/settings/tokens "
            "(or set HF_TOKEN; on Colab, add a secret named HF_TOKEN)"
        )
    return token


def _token_state() -> str:
    try:
        hf_token()
    except TinyLLMError:
        return "none found (a real upload needs one: `hf auth login`)"
    return "found"


def _require_online() -> None:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true"):
        raise TinyLLMError("HF_HUB_OFFLINE is set: publishing needs the network; unset it and run again")


def upload(up: Upload, token: str, private: bool) -> str:
    """Create the repository if needed and upload the files in one commit; the repository's URL."""
    _require_online()
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise TinyLLMError(f"publish needs huggingface_hub: {HF_EXTRA}") from None
    api = HfApi(token=token)
    try:
        url = api.create_repo(up.repo_id, private=private, exist_ok=True, repo_type="model")
        # create_repo leaves an existing repository as it is: never upload "private" weights to a public one.
        if private and not api.model_info(up.repo_id).private:
            raise TinyLLMError(f"{up.repo_id} exists and is public: make it private on the Hub first, or drop "
                               "--private")
        api.upload_folder(
            repo_id=up.repo_id, folder_path=up.folder, repo_type="model",
            allow_patterns=[name for name, _ in up.files],
            commit_message=f"Upload {up.folder.name} with tinyllm export",
        )  # fmt: skip
    except TinyLLMError:
        raise
    except Exception as e:  # network, auth, quota...: the Hub's answer in one line, never a traceback
        raise TinyLLMError(f"upload to {up.repo_id} failed: {_describe(e)}") from None
    return str(url)


def _describe(e: Exception) -> str:
    text = one_line(str(e), 200) or type(e).__name__
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (401, 403):
        return f"the Hub refused the token ({status}): log in with a token that has write access ({text})"
    if status is not None:  # the Hub answered (HfHubHTTPError is also an OSError: check this first)
        return f"the Hub answered {status}: {text}"
    names = {type(e).__name__, *(type(c).__name__ for c in (e.__cause__, e.__context__) if c is not None)}
    if names & {"ConnectError", "ConnectionError", "ConnectTimeout", "OfflineModeIsEnabled", "gaierror"} or isinstance(
        e, OSError
    ):
        return f"cannot reach the Hub; are you offline? ({type(e).__name__}: {text})"
    return f"{type(e).__name__}: {text}"


def publish(export_dir: str, repo_id: str, private: bool = False, dry_run: bool = False) -> None:
    """Upload an exported folder to the Hugging Face Hub (token: $HF_TOKEN, `hf auth login`, or Colab's secret).

    Args:
        export_dir: a folder written by `tinyllm export`.
        repo_id: USER/NAME on the Hub (created if missing).
        private: create the repository as private.
        dry_run: list what would be uploaded, upload nothing.
    """
    up = plan(export_dir, repo_id)
    token = None
    if not dry_run:  # fail before printing anything when the upload cannot even start
        token = hf_token()
        _require_online()
    visibility = "private" if private else "public"
    verb = "would upload" if dry_run else "uploading"
    print(f"publish{' (dry run)' if dry_run else ''}: {verb} {len(up.files)} files, {fmt_bytes(up.total)}, "
          f"to https://huggingface.co/{up.repo_id} ({visibility})")  # fmt: skip
    for name, size in up.files:
        print(f"  {name:<22} {size:>12,} bytes  {fmt_bytes(size):>9}")
    if up.left_out:
        print(f"  not uploaded (not written by export): {', '.join(up.left_out)}")
    if dry_run:
        print(f"Hugging Face token: {_token_state()}; nothing was uploaded")
        return
    sys.stdout.flush()
    print(f"published: {upload(up, token, private)}")
