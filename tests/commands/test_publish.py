"""``python -m tinyllm publish``: checks before anything goes up, dry run, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import (
    assert_one_line_error,
    describe,
    env_for_cli,
    run_cli,
)
from tinyllm.commands.publish import plan, publish
from tinyllm.errors import TinyLLMError


def test_publish_dry_run_lists_the_files_with_sizes(exports, tmp_path: Path):
    proc = run_cli("publish", "--export_dir", exports["char"], "--repo_id", "someone/tiny-char", "--dry_run", "true",
                   cwd=tmp_path, env=_no_login(tmp_path))  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert "Hugging Face token: none found" in proc.stdout
    assert "would upload 5 files" in proc.stdout and "huggingface.co/someone/tiny-char (public)" in proc.stdout
    for f in exports["char"].iterdir():
        assert any(f.name in line and f"{f.stat().st_size:,} bytes" in line for line in proc.stdout.splitlines())
    assert "nothing was uploaded" in proc.stdout


def _no_login(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with no token anywhere huggingface_hub looks: no $HF_TOKEN, an empty HF_HOME."""
    env = env_for_cli(HF_HOME=str(tmp_path / "hf-home"), **extra)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        env.pop(name, None)
    return env


def test_publish_without_token_fails_with_one_line(exports, tmp_path: Path):
    proc = run_cli("publish", "--export_dir", exports["char"], "--repo_id", "someone/tiny", cwd=tmp_path,
                   env=_no_login(tmp_path))  # fmt: skip
    assert_one_line_error(proc, "hf auth login", "HF_TOKEN")
    assert proc.stdout == ""


@pytest.mark.slow
def test_publish_finds_the_stored_login_and_never_prints_it(exports, tmp_path: Path):
    secret = "hf_storedLoginToken0123456789"
    (tmp_path / "hf-home").mkdir()
    (tmp_path / "hf-home" / "token").write_text(secret)  # where `hf auth login` stores it
    env = _no_login(tmp_path, HF_ENDPOINT="http://127.0.0.1:9")  # no Hub: the upload itself fails, offline
    dry = run_cli("publish", "--export_dir", exports["char"], "--repo_id", "someone/tiny", "--dry_run", "true",
                  cwd=tmp_path, env=env)  # fmt: skip
    assert "Hugging Face token: found" in dry.stdout, describe(dry)
    proc = run_cli("publish", "--export_dir", exports["char"], "--repo_id", "someone/tiny", cwd=tmp_path, env=env)
    assert_one_line_error(proc, "someone/tiny", "offline")  # it got past the token: the stored login was used
    for p in (dry, proc):
        assert secret not in p.stdout + p.stderr
    assert not [f for f in tmp_path.rglob("*") if f.is_file() and secret in f.read_text(errors="ignore")
                and f.name != "token"]  # fmt: skip


def test_publish_offline_fails_with_one_line(exports, tmp_path: Path, monkeypatch):
    # No route to the Hub: a closed local port stands in for being offline (no waiting on DNS).
    env = env_for_cli(HF_TOKEN="hf_fake", HF_ENDPOINT="http://127.0.0.1:9")
    proc = run_cli("publish", "--export_dir", exports["char"], "--repo_id", "someone/tiny", cwd=tmp_path, env=env)
    assert_one_line_error(proc, "someone/tiny", "offline")
    # And with HF_HUB_OFFLINE set, it refuses before any attempt.
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TinyLLMError, match="HF_HUB_OFFLINE"):
        publish(export_dir=str(exports["char"]), repo_id="someone/tiny")


def test_publish_checks_the_folder_before_anything_goes_up(exports, tmp_path: Path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(exports["char"], folder)
    (folder / "notes.txt").write_text("private notes")
    up = plan(folder, "someone/tiny")
    assert "notes.txt" not in [name for name, _ in up.files] and up.left_out == ["notes.txt"]
    with pytest.raises(TinyLLMError, match="not a Hub repository id"):
        plan(folder, "no-namespace")
    # A card that describes other weights is refused (the original project's mistake).
    shutil.copy(exports["vanilla"] / "README.md", folder / "README.md")
    with pytest.raises(TinyLLMError, match="does not describe these weights"):
        plan(folder, "someone/tiny")
