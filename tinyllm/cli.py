"""``python -m tinyllm``: Lightning's CLI (fit, validate) plus tinyllm's own commands.

    python -m tinyllm fit --config configs/quick.yaml
    python -m tinyllm validate --config configs/quick.yaml --ckpt_path last
    python -m tinyllm generate --ckpt_path checkpoints/quick/last.ckpt --prompt "ROMEO:"

Every error a user can cause ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from tinyllm.errors import TinyLLMError, one_line

HELP = """usage: python -m tinyllm COMMAND [options]

Lightning commands (see `python -m tinyllm COMMAND --help`):
  fit        train a model:          fit --config configs/quick.yaml [--ckpt_path last]
  validate   val loss of a checkpoint: validate --config configs/quick.yaml --ckpt_path last

tinyllm commands:
  generate   sample text from a checkpoint (KV cache, top-k/top-p, streaming)
  bench      measure speed: bench generate [--ckpt_path P | --preset modern] [--json FILE]
"""


def _lightning_cli(args: list[str] | None) -> None:
    """Lightning's CLI; ``args=None`` reads sys.argv like any command-line program."""
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

        def before_instantiate_classes(self) -> None:
            cfg = self.config[self.subcommand]
            ckpt_path = cfg.get("ckpt_path")
            if ckpt_path and ckpt_path not in ("last", "best", "hpc") and not Path(ckpt_path).is_file():
                raise TinyLLMError(
                    f"checkpoint {ckpt_path} does not exist: pass a .ckpt file, or 'last' to resume the run's newest"
                )
            trainer_cfg = cfg.trainer
            if trainer_cfg.precision is None:
                precision, why = choose_precision(str(trainer_cfg.accelerator))
                trainer_cfg.precision = precision
                print(f"tinyllm: precision auto -> {precision} ({why})", file=sys.stderr)

    try:
        TinyLLMCLI(
            GPTLitModule,
            ShakespeareDataModule,
            args=args,
            seed_everything_default=1337,
            save_config_kwargs={"overwrite": True},  # a resumed run re-saves its config
            parser_kwargs={"exit_on_error": False},
        )
    except ArgumentError as e:
        raise TinyLLMError(one_line(str(e))) from None


def _commands() -> dict[str, Callable[[list[str]], Any]]:
    from tinyllm import bench, generate

    return {"generate": generate.main, "bench": bench.main}


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
            _lightning_cli(argv)
    except TinyLLMError as e:
        print(f"tinyllm: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("tinyllm: interrupted", file=sys.stderr)
        sys.exit(130)
