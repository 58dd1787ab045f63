"""``python -m tinyllm``: Lightning's CLI (fit, validate) plus tinyllm's own commands.

    python -m tinyllm fit --config configs/quick.yaml
    python -m tinyllm validate --config configs/quick.yaml --ckpt_path last
    python -m tinyllm generate --ckpt_path checkpoints/quick/last.ckpt --prompt "ROMEO:"

Every error a user can cause ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from tinyllm.errors import TinyLLMError, one_line

HELP = """usage: python -m tinyllm COMMAND [options]

Lightning commands (see `python -m tinyllm COMMAND --help`):
  fit        train a model:          fit --config configs/quick.yaml [--ckpt_path last]
  validate   val loss of a checkpoint: validate --config configs/quick.yaml --ckpt_path last

tinyllm commands:
  generate   sample text from a checkpoint (KV cache, top-k/top-p, streaming, --quantize int8, --compile)
  bench      measure speed: bench generate [--ckpt_path P | --preset modern] [--json FILE]
             bench train --config configs/modern.yaml [--steps 5] [--json FILE]
  plot       loss and LR curves as PNG: plot --logdir logs/quick [--out curves.png]
  card       a model card with val loss and samples measured now: card --ckpt_path P [--out MODEL_CARD.md]
  experiment the swaps, reproducibly: experiment swaps --preset cpu [--seeds "[1, 2, 3]"]
  export     shareable folder (safetensors, Llama layout if LLaMA-shaped): export --ckpt_path P --out_dir DIR
  publish    upload an export to the Hub ($HF_TOKEN): publish --export_dir DIR --repo_id USER/NAME [--dry_run true]

generate, bench and validate also take an exported folder as --ckpt_path.
"""


def build_cli(args: list[str] | None, run: bool = True) -> Any:
    """tinyllm's LightningCLI. ``run=False`` only builds model, data and trainer from ``--config`` args."""
    # Imported here so that `python -m tinyllm generate` does not pay for Lightning's CLI machinery.
    from jsonargparse import ArgumentError
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from tinyllm.data import ShakespeareDataModule
    from tinyllm.lit import GPTLitModule
    from tinyllm.precision import choose_precision

    class TinyLLMCLI(LightningCLI):
        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            # test/predict are left out: there is no test split, and prediction is `generate`.
            return {name: keys for name, keys in LightningCLI.subcommands().items() if name in ("fit", "validate")}

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            # The model's context decides the data windows; the data decides the vocabulary
            # and tokenizer. Linked, so nothing is typed twice or can disagree.
            parser.link_arguments("model.arch.block_size", "data.block_size")
            parser.link_arguments("data.vocab_size", "model.arch.vocab_size", apply_on="instantiate")
            parser.link_arguments("data.tokenizer_state", "model.tokenizer", apply_on="instantiate")
            # Training draws endless random windows: the run length is max_steps, not epochs.
            parser.set_defaults({"trainer.max_epochs": -1, "trainer.check_val_every_n_epoch": None})

        def _parse_ckpt_path(self) -> None:
            # Lightning reads an explicit checkpoint right here (for its hyperparameters) and a corrupt or
            # foreign file would end in a traceback; read it first, safely, for a one-line error instead.
            sub = self.config.get("subcommand")
            ckpt_path = self.config[sub].get("ckpt_path") if sub else None
            if ckpt_path and ckpt_path not in ("last", "best", "hpc"):
                if not Path(ckpt_path).is_file():
                    raise TinyLLMError(
                        f"checkpoint {ckpt_path} is not a file: pass a .ckpt file, or 'last' to resume the run's newest"
                    )
                from tinyllm.checkpoint import read_checkpoint

                read_checkpoint(ckpt_path)  # weights_only=True
            super()._parse_ckpt_path()

        def before_instantiate_classes(self) -> None:
            cfg = self.config[self.subcommand] if self.subcommand else self.config
            trainer_cfg = cfg.trainer
            if trainer_cfg.precision is None:
                precision, why = choose_precision(str(trainer_cfg.accelerator))
                trainer_cfg.precision = precision
                print(f"tinyllm: precision auto -> {precision} ({why})", file=sys.stderr)

        def instantiate_classes(self) -> None:
            # jsonargparse wraps errors raised while building callbacks or models (a bad option in the
            # YAML) in multi-line ValueErrors; surface our own one-line message instead.
            try:
                super().instantiate_classes()
            except (ValueError, TypeError, RuntimeError) as e:  # all raised by a bad class or option in the config
                cause: BaseException | None = e
                while cause is not None and not isinstance(cause, TinyLLMError):
                    cause = cause.__cause__ or cause.__context__
                raise TinyLLMError(one_line(str(cause or e))) from None

        def before_fit(self) -> None:
            check_output_dirs(self.trainer, self.model.model.num_parameters())
            if self.config[self.subcommand].get("ckpt_path") == "last":
                announce_fresh_start(self.trainer)

    try:
        return TinyLLMCLI(
            GPTLitModule,
            ShakespeareDataModule,
            args=args,
            run=run,
            seed_everything_default=1337,
            save_config_kwargs={"overwrite": True},  # a resumed run re-saves its config
            parser_kwargs={"exit_on_error": False},
        )
    except ArgumentError as e:
        raise TinyLLMError(one_line(str(e))) from None


def check_output_dirs(trainer: Any, n_params: int) -> None:
    """Fail at start-up, not after an hour, when checkpoints or logs cannot be written."""
    from lightning.pytorch.callbacks import Checkpoint

    # A checkpoint holds weights and two Adam moments in fp32; a save needs room for a second copy.
    needed = 2 * 3 * 4 * n_params
    dirs = {Path(cb.dirpath) for cb in trainer.callbacks if isinstance(cb, Checkpoint) and getattr(cb, "dirpath", None)}
    if trainer.logger is not None and trainer.logger.log_dir:
        dirs.add(Path(trainer.logger.log_dir))
    for d in sorted(dirs):
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = d / ".tinyllm-write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise TinyLLMError(f"cannot write to {d} ({e.strerror}): choose a writable checkpoint/log directory") from None
        free = shutil.disk_usage(d).free
        if free < needed:
            raise TinyLLMError(
                f"only {free / 1e6:.0f} MB free at {d}, a checkpoint needs about {needed / 1e6:.0f} MB: free some space"
            )


def announce_fresh_start(trainer: Any) -> None:
    """`--ckpt_path last` with nothing saved yet: Lightning starts fresh with a warning; say it plainly."""
    from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint

    found = []
    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            found += [p for p in Path(cb.dirpath).glob("last*.ckpt")]
        elif isinstance(cb, OnExceptionCheckpoint):
            found += [p for p in [Path(cb.ckpt_path)] if p.exists()]
    if not found:
        dirs = sorted({str(Path(cb.dirpath).resolve()) for cb in trainer.callbacks if getattr(cb, "dirpath", None)})
        print(f"tinyllm: no checkpoint to resume in {', '.join(dirs) or 'the checkpoint directory'}: "
              "starting a new run", file=sys.stderr)


@contextmanager
def lightning_checkpoint_args(args: list[str]) -> Iterator[list[str]]:
    """``args`` with an exported folder given as ``--ckpt_path`` replaced by an equivalent temporary .ckpt.

    Lightning's ``validate`` reads .ckpt files only. The temporary file holds the
    folder's weights and architecture/tokenizer hyperparameters, nothing else
    (tensors and plain types, loadable with weights_only=True); it is deleted
    afterwards. Any other ``--ckpt_path`` passes through untouched.
    """
    import tempfile

    import torch

    from tinyllm.checkpoint import export_dir_of
    from tinyllm.export import load_export

    where = None
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            where, value, prefix = i + 1, args[i + 1], ""
        elif arg.startswith("--ckpt_path="):
            where, value, prefix = i, arg.split("=", 1)[1], "--ckpt_path="
    folder = export_dir_of(value) if where is not None else None
    if folder is None:
        yield args
        return
    loaded = load_export(folder)
    with tempfile.TemporaryDirectory(prefix="tinyllm-export-") as tmp:
        path = Path(tmp) / f"{loaded.path.name}.ckpt"
        torch.save(lightning_checkpoint(loaded), path)
        print(f"tinyllm: validating exported folder {loaded.path} (as {path.name})", file=sys.stderr)
        yield [*args[:where], prefix + str(path), *args[where + 1 :]]


def lightning_checkpoint(loaded: Any) -> dict[str, Any]:
    """A minimal Lightning checkpoint dict (weights + hyperparameters) for ``loaded``."""
    import lightning

    from tinyllm.checkpoint import MODEL_PREFIX

    state = {MODEL_PREFIX + k: v for k, v in loaded.model.state_dict().items()}
    hparams = {"arch": loaded.model.config.to_dict(), "tokenizer": loaded.tokenizer.state()}
    return {"state_dict": state, "hyper_parameters": hparams, "global_step": loaded.step or 0, "epoch": 0,
            "pytorch-lightning_version": lightning.__version__}  # fmt: skip


def _commands() -> dict[str, Callable[[list[str]], Any]]:
    from tinyllm import bench, card, experiment, export, generate, plot, publish

    def validate(args: list[str]) -> None:
        # Lightning's validate, unchanged; an exported folder as --ckpt_path is handed over as a temporary .ckpt.
        import warnings

        with lightning_checkpoint_args(args) as lightning_args, warnings.catch_warnings():
            # Lightning warns when explicit args differ from sys.argv: here that is the point.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            build_cli(["validate", *lightning_args])

    return {"generate": generate.main, "bench": bench.main, "export": export.main, "publish": publish.main,
            "validate": validate, "plot": plot.main, "experiment": experiment.main, "card": card.main}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        if not args or args[0] in ("-h", "--help"):
            print(HELP)
            return
        commands = _commands()
        if args[0] in commands:
            commands[args[0]](args[1:])
        else:
            build_cli(argv)  # None: Lightning reads sys.argv itself
    except TinyLLMError as e:
        print(f"tinyllm: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("tinyllm: interrupted", file=sys.stderr)
        sys.exit(130)
