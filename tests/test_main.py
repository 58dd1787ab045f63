"""The command registry (tinyllm.__main__): help is generated from it, and lists exactly its commands."""

from __future__ import annotations

import inspect
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers.cli import TINY, assert_one_line_error, describe, env_for_cli, forkable, run_cli, run_main
from tinyllm.__main__ import COMMANDS, LIGHTNING_COMMANDS, build_parser, command

FUNCTIONS = {f"{group} {name}" if isinstance(t, dict) else group: target
             for group, t in COMMANDS.items() for name, target in (t.items() if isinstance(t, dict) else [(group, t)])}  # fmt: skip


def listed_commands(help_text: str) -> list[str]:
    """The subcommand names in jsonargparse's help ("    generate   Sample text ...")."""
    section = help_text.split("Available subcommands:", 1)[1]
    return re.findall(r"^    (\w+)\s", section, flags=re.M)


@pytest.mark.slow
def test_help_lists_exactly_the_registered_commands(tmp_path: Path):
    proc = run_cli("--help", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, describe(proc)
    assert listed_commands(proc.stdout) == list(COMMANDS)
    for name, target in COMMANDS.items():  # each line is the first line of the function's docstring
        if not isinstance(target, dict):
            first = inspect.getdoc(command(target)).splitlines()[0]
            assert first.split()[0] in proc.stdout.split(f"    {name}", 1)[1][:200], name


@pytest.mark.slow
@pytest.mark.parametrize("args", [["generate", "--help"], ["generate", "--ckpt_path", "missing.ckpt"],
                                  ["fit", "--config", "missing.yaml"], ["fit", "--config", TINY, "--trainer.max_steps", "0"]])  # fmt: skip
def test_the_tests_fork_server_runs_the_cli_as_a_new_interpreter_does(tmp_path: Path, args: list[str]):
    """run_cli forks most runs from a server that imported tinyllm once (tests/helpers/zygote.py): same output, same status."""
    forked = run_cli(*args, cwd=tmp_path)
    fresh = run_cli(*args, cwd=tmp_path, fresh=True)
    assert (forked.returncode, forked.stdout) == (fresh.returncode, fresh.stdout), describe(forked) + describe(fresh)
    assert forked.stderr.splitlines()[-1:] == fresh.stderr.splitlines()[-1:], describe(forked) + describe(fresh)


@pytest.mark.slow
def test_a_forked_run_past_its_timeout_is_killed_and_the_server_serves_the_next(tmp_path: Path):
    """As ``subprocess.run`` does: the run is killed and TimeoutExpired carries its output; the server goes on."""
    assert forkable(env_for_cli())  # so the run below goes through the server
    args = ("fit", "--config", TINY, "--trainer.max_steps", "1000")  # a few seconds at least
    with pytest.raises(subprocess.TimeoutExpired) as stopped:
        run_cli(*args, cwd=tmp_path, timeout=0.5)
    assert stopped.value.timeout == 0.5 and isinstance(stopped.value.output, str)
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0 and listed_commands(proc.stdout) == list(COMMANDS), describe(proc)


def test_groups_list_their_commands(capsys: pytest.CaptureFixture[str]):
    for group, target in COMMANDS.items():
        if isinstance(target, dict):
            with pytest.raises(SystemExit):
                build_parser().parse_args([group, "--help"])
            assert listed_commands(capsys.readouterr().out) == list(target)


@pytest.mark.parametrize("name", [n for n in FUNCTIONS if n not in LIGHTNING_COMMANDS])
def test_every_command_is_a_typed_documented_function(name: str):
    fn = command(FUNCTIONS[name])
    signature = inspect.signature(fn)
    doc = inspect.getdoc(fn)
    assert doc and "Args:" in doc, f"{name}: its docstring is its help, and must document its arguments"
    for param in signature.parameters.values():
        assert param.annotation is not inspect.Parameter.empty, f"{name}: --{param.name} has no type"
        assert re.search(rf"^\s+{param.name}:", doc, flags=re.M), f"{name}: --{param.name} is not documented"


def test_a_commands_help_comes_from_its_docstring(tmp_path: Path):
    proc = run_cli("generate", "--help", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, describe(proc)
    assert "Sample text from a checkpoint" in proc.stdout
    assert "softmax temperature; 0 is greedy" in proc.stdout  # the Args: line of --temperature


@pytest.mark.parametrize("name", ["fit", "validate", "generate"])
def test_every_usage_line_names_the_program_and_the_description_is_the_docstring(tmp_path: Path, name: str):
    proc = run_main(name, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: python -m tinyllm [options] {name}"), proc.stdout[:200]
    # The description is the command function's docstring (Lightning's own would describe its Trainer method).
    doc = " ".join(inspect.getdoc(command(COMMANDS[name])).split("\n\nArgs:")[0].split())
    assert doc in " ".join(proc.stdout.split()), proc.stdout[-1500:]
    if name == "fit":  # tinyllm's own run options are documented once, in run_options' docstring
        from tinyllm.training.cli import run_options

        for line in inspect.getdoc(run_options).split("Args:")[1].strip().splitlines():
            assert line.split(": ", 1)[1] in " ".join(proc.stdout.split()), line


@pytest.mark.parametrize(("args", "quoted"), [(["--help"], "(bench generate)"), (["fit", "--help"], "(step 1200/5000)"),
                                              (["validate", "--help"], "(step 1200/5000)")])  # fmt: skip
def test_help_shows_no_rest_quotes(tmp_path: Path, args: list[str], quoted: str):
    proc = run_main(*args, cwd=tmp_path)  # the docstrings' ``code`` (ours and Lightning's) reads as code
    assert proc.returncode == 0 and "``" not in proc.stdout, proc.stdout[-2000:]
    assert quoted in " ".join(proc.stdout.split())


def test_every_architecture_switch_is_explained_in_fit_help(tmp_path: Path):
    import dataclasses

    from tinyllm.core.config import GPTConfig

    proc = run_main("fit", "--help", cwd=tmp_path)
    options = re.split(r"\n  (?=--)", proc.stdout)  # one entry per option, its help text after its name
    for field in dataclasses.fields(GPTConfig):
        if field.name == "vocab_size":  # not an option: the data decides it
            continue
        entry = next((o for o in options if o.startswith(f"--model.arch.{field.name} ")), None)
        assert entry is not None, f"--model.arch.{field.name} is not in fit --help"
        _, *words = entry.split()
        if words and (words[0].isupper() or words[0].startswith("{")):  # its metavar
            words = words[1:]
        assert words and words[0] != "(type:", f"--model.arch.{field.name} has no explanation: {entry!r}"


@pytest.mark.parametrize("args,mention", [
    (["no-such-command"], "no-such-command"),
    (["generate"], "ckpt_path"),
    (["bench", "fly"], "fly"),
    (["generate", "--ckpt_path", "x", "--top_k", "many"], "top_k"),
])  # fmt: skip
def test_bad_commands_and_options_are_one_line(tmp_path: Path, args: list[str], mention: str):
    assert_one_line_error(run_main(*args, cwd=tmp_path), mention)


def test_generate_and_the_help_import_no_lightning(fit_run, tmp_path: Path):
    # The registry imports only the command it runs (none to list them all): generate and --help start without
    # Lightning's seconds of imports.
    import subprocess
    import sys

    ckpt = fit_run.dir / "checkpoints/tiny/last.ckpt"
    script = ("import sys\nfrom tinyllm.__main__ import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
              "print('LIGHTNING', any(m.split('.')[0] in ('lightning', 'pytorch_lightning') for m in sys.modules))")  # fmt: skip
    for args in (["--help"], ["generate", "--help"], ["generate", "--ckpt_path", str(ckpt), "--max_new_tokens", "5"]):
        proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=tmp_path,
                              timeout=120)  # fmt: skip
        assert proc.stdout.strip().splitlines()[-1] == "LIGHTNING False", describe(proc)


# ----------------------------------------------------------------------------- outputs the OS refuses

# Every command that writes, with its output under {out}; the inputs need not exist: the output is checked first.
WRITES = {
    "prepare": ["--inputs", "corpus.txt", "--out", "{out}/ds"],
    "export": ["--ckpt_path", "missing.ckpt", "--out_dir", "{out}/hf"],
    "export --format gguf": ["--ckpt_path", "missing.ckpt", "--out_dir", "{out}/gguf", "--format", "gguf"],
    "card": ["--ckpt_path", "missing.ckpt", "--out", "{out}/MODEL_CARD.md"],
    "plot": ["--logdir", "logs/none", "--out", "{out}/curves.png"],
    "inspect": ["--ckpt_path", "missing.ckpt", "--out_dir", "{out}/pictures"],
    "bench generate": ["--json", "{out}/bench.json"],
    "bench train": ["--config", str(TINY), "--json", "{out}/bench.json"],
    "experiment swaps": ["--out", "{out}/results"],
    "experiment budgets": ["--out", "{out}/results"],
    "experiment tokenizers": ["--out", "{out}/results"],
    "experiment scaling": ["--out", "{out}/results"],
}  # fit: tests/training/test_faults.py (its folders come from --name and the working directory)
REFUSED = {
    "below a file": lambda tmp: tmp / "a-file" / "out",
    "under /proc": lambda tmp: Path("/proc/tinyllm-refused/out"),
}


def test_every_command_with_an_output_option_is_in_the_refused_folder_test():
    writers = {name for name, target in FUNCTIONS.items() if name not in LIGHTNING_COMMANDS
               and {"out", "out_dir", "json"} & set(inspect.signature(command(target)).parameters)}  # fmt: skip
    assert writers == {name.split(" --")[0] for name in WRITES}


@pytest.mark.parametrize("where", list(REFUSED))
@pytest.mark.parametrize("name", list(WRITES))
def test_an_output_folder_the_os_refuses_is_one_line_before_any_work(tmp_path: Path, name: str, where: str):
    (tmp_path / "a-file").write_text("a file where a folder should be")
    (tmp_path / "corpus.txt").write_text("some text to prepare\n" * 50)
    out = REFUSED[where](tmp_path)
    args = [a.replace("{out}", str(out)) for a in WRITES[name]]
    proc = run_main(*name.split(" --")[0].split(), *args, cwd=tmp_path)
    line = assert_one_line_error(proc, "cannot", str(out.parent))
    assert any(cause in line for cause in ("Not a directory", "No such file or directory")), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "corpus.txt"]  # nothing else was written


def test_an_error_raised_in_a_data_loader_worker_is_its_own_message(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]):  # fmt: skip
    import tinyllm.__main__ as entry
    from torch.utils.data import DataLoader, IterableDataset

    from tinyllm.errors import TinyLLMError

    class Damaged(IterableDataset):
        def __iter__(self):
            raise TinyLLMError("train_000001.bin is damaged: prepare the dataset again")

    monkeypatch.setattr(entry, "run", lambda argv: next(iter(DataLoader(Damaged(), batch_size=None, num_workers=1))))
    with pytest.raises(SystemExit) as exit_:
        entry.main(["fit"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "tinyllm: error: train_000001.bin is damaged: prepare the dataset again\n"


def test_running_out_of_memory_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Options that ask for more memory than there is (numpy's MemoryError, torch's allocator) say what to change."""
    import tinyllm.__main__ as entry

    def refused(argv):
        raise MemoryError("Unable to allocate 74.5 GiB for an array")  # numpy's _ArrayMemoryError is one

    def torch_refused(argv):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 2560000000000 bytes. Error code 12 (Cannot allocate memory)")  # fmt: skip

    for run in (refused, torch_refused):
        monkeypatch.setattr(entry, "run", run)
        with pytest.raises(SystemExit) as exit_:
            entry.main(["generate"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("tinyllm: error: out of memory") and err.count("\n") == 1
    monkeypatch.setattr(entry, "run", lambda argv: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # any other RuntimeError is not hidden
        entry.main(["generate"])
