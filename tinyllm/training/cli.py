"""tinyllm's LightningCLI: ``fit`` and ``validate``, with a run's machinery wired in code.

A config states only what makes a run what it is (model, data, schedule). What
every run needs, and what correctness depends on, is added here, so that no
YAML can drop it by accident:

* **One run name** (``name: quick``) decides ``checkpoints/quick/`` and
  ``logs/quick/``, nothing else does.
* **Always on:** atomic checkpoint writes, ``best.ckpt`` (lowest val loss),
  ``last.ckpt`` every N steps and on Ctrl-C (``ResumeCheckpoint``, listed
  after "best" so it saves the evaluation's outcome), the RNG state, and a
  TensorBoard logger that, on resume, purges what the killed run logged after
  its checkpoint.
* **Optional, defaults here:** early stopping, the LR monitor, throughput,
  the step progress bar and generation samples; each is one top-level key that
  ``null`` switches off (``--samples null``).
* **Resume only when asked.** ``fit`` into a run folder that already holds a
  run is refused (``--ckpt_path last`` resumes it); a checkpoint is resumed
  only into the configuration it was trained with. ``validate`` takes the
  checkpoint's architecture, and says so when the config's differs.

``--print_config`` shows the whole effective config, defaults included.
"""

from __future__ import annotations

import inspect
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from jsonargparse import ArgumentError, lazy_instance
from jsonargparse.typing import PositiveInt
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from tinyllm.core.checkpoint import read_checkpoint
from tinyllm.core.config import GPTConfig
from tinyllm.errors import TinyLLMError, one_line
from tinyllm.training.callbacks import (
    AtomicCheckpointIO, AttentionImages, GenerationSamples, ResumeCheckpoint, RNGState, StepProgressBar, TimeBudget,
    TokenThroughput,
)  # fmt: skip
from tinyllm.training.data import ShakespeareDataModule
from tinyllm.training.module import GPTLitModule
from tinyllm.training.precision import choose_precision, probe_key, training_step_probe

# The optional callbacks: config key -> (class, default arguments). `null` in a config switches one off.
OPTIONAL_CALLBACKS: dict[str, tuple[type[Callback], dict[str, Any] | None]] = {
    "early_stopping": (EarlyStopping, {"monitor": "val_loss", "mode": "min", "patience": 3}),
    "lr_monitor": (LearningRateMonitor, {"logging_interval": "step"}),
    "throughput": (TokenThroughput, {}),
    "progress_bar": (StepProgressBar, {}),
    "samples": (GenerationSamples, {"prompt": "ROMEO:", "max_new_tokens": 200}),
    "attention_images": (AttentionImages, None),  # None: off unless switched on
}
TRAINER_DEFAULTS = {
    "trainer.max_epochs": -1,  # training draws endless random windows: the length is max_steps, not epochs
    "trainer.check_val_every_n_epoch": None,  # evaluate every val_check_interval batches instead
    "trainer.log_every_n_steps": 10,
}
FIT_DESCRIPTION = """Train a model. A run is a name: checkpoints/<name>/ and logs/<name>/.

Length: --trainer.max_steps N, or a time budget --trainer.max_time DD:HH:MM:SS (or both: whichever
ends first). A time-budget run finishes by its deadline: the learning rate decays over the time,
and the last evaluation and checkpoint fit inside it. --ckpt_path last resumes a run. A step-defined
run resumes bit for bit. A time-defined run resumes within the same budget (the time used is in the
checkpoint), but not bit for bit: how many steps fit, and the learning rate at each, depend on the
machine's speed in each session."""
CHECKPOINT_MODEL_KEYS = (
    "arch", "lr", "min_lr", "warmup_steps", "weight_decay", "betas", "schedule", "decay_fraction", "optimizer", "muon_lr"
)  # a resume must match


@dataclass(frozen=True)
class RunFolders:
    """Where the run called ``name`` writes (relative to the working directory)."""

    name: str

    @property
    def checkpoints(self) -> Path:
        return Path("checkpoints") / self.name

    @property
    def logs(self) -> Path:
        return Path("logs") / self.name

    def holds_a_run(self) -> list[str]:
        """The checkpoints already there (empty for a new run).

        Logs alone do not make a run: a start that failed before its first
        checkpoint leaves an events file, and a new run purges it from view.
        """
        return [str(p) for p in sorted(self.checkpoints.glob("*.ckpt"))]

    def has_logs(self) -> bool:
        return any(self.logs.glob("events.out.tfevents.*"))


class TinyLLMCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # test/predict are left out: there is no test split, and prediction is `generate`.
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name in ("fit", "validate")}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--name", type=str, default="run", help="the run: checkpoints/<name>/ and logs/<name>/")
        parser.add_argument("--save_every_n_steps", type=Optional[PositiveInt], default=None,
                            help="last.ckpt every N optimizer steps (default: at every evaluation)")  # fmt: skip
        for key, (cls, init) in OPTIONAL_CALLBACKS.items():
            default = None if init is None else lazy_instance(cls, **init)
            state = "off by default: give it to switch it on" if init is None else "null switches it off"
            parser.add_argument(f"--{key}", type=Optional[cls], default=default, help=f"{cls.__name__} ({state})")
        # The model's context decides the data windows; the data decides the vocabulary
        # and tokenizer. Linked, so nothing is typed twice or can disagree.
        parser.link_arguments("model.arch.block_size", "data.block_size")
        parser.link_arguments("data.vocab_size", "model.arch.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.tokenizer_state", "model.tokenizer", apply_on="instantiate")
        parser.set_defaults(TRAINER_DEFAULTS)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        self.resume_step = check_ckpt_path(self.config[sub], sub) if sub else None

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.trainer.precision is None:
            arch = GPTConfig(**{**cfg.model.arch.as_dict(), "vocab_size": 50257 if cfg.data.tokenizer == "gpt2" else 65})
            # validate asks too: for the same config it gets the answer fit got (cached), so it evaluates as training did.
            probe = training_step_probe(arch, cfg.data.batch_size)
            precision, why = choose_precision(str(cfg.trainer.accelerator), probe, probe_key(arch, cfg.data.batch_size))
            cfg.trainer.precision = precision
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

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        run = RunFolders(cfg["name"])
        every = cfg["save_every_n_steps"] or evaluation_interval_in_steps(cfg["trainer"])
        optional = [cfg[key] for key in OPTIONAL_CALLBACKS if cfg[key] is not None]
        callbacks = [*run_machinery(run, every), *optional, *(cfg["trainer"].get("callbacks") or [])]
        plugins = [AtomicCheckpointIO(), *(cfg["trainer"].get("plugins") or [])]
        logger = cfg["trainer"].get("logger")
        if logger is None or logger is True:  # the default: TensorBoard in logs/<name>/, continued on resume
            # On resume, TensorBoard hides what the killed run logged after its checkpoint (purge_step), so each
            # curve stays one line; a fresh start hides the leftovers of a start that never saved a checkpoint.
            purge_step = self.resume_step if self.resume_step is not None else (0 if run.has_logs() else None)
            logger = TensorBoardLogger("logs", name=run.name, version="", purge_step=purge_step)
        return super().instantiate_trainer(callbacks=callbacks, plugins=plugins, logger=logger, **kwargs)

    def before_fit(self) -> None:
        cfg = self.config[self.subcommand]
        run = RunFolders(cfg.name)
        check_output_dirs(self.trainer, self.model.model.num_parameters())
        if cfg.ckpt_path == "last" and not (run.checkpoints / "last.ckpt").exists():
            print(f"tinyllm: no checkpoint to resume in {run.checkpoints.resolve()}: starting a new run", file=sys.stderr)


def run_machinery(run: RunFolders, every_n_steps: int) -> list[Callback]:
    """The callbacks every run has, in the order correctness needs: "best" before the resume checkpoint."""
    best = ModelCheckpoint(dirpath=str(run.checkpoints), filename="best", monitor="val_loss", mode="min",
                           save_top_k=1, enable_version_counter=False)  # fmt: skip
    return [best, ResumeCheckpoint(str(run.checkpoints), every_n_steps), RNGState(), TimeBudget()]


def evaluation_interval_in_steps(trainer_cfg: dict[str, Any]) -> int:
    """Optimizer steps between evaluations (``val_check_interval`` counts batches), else 100."""
    interval = trainer_cfg.get("val_check_interval")
    if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
        return 100
    return max(1, interval // (trainer_cfg.get("accumulate_grad_batches") or 1))


def check_ckpt_path(cfg: Any, subcommand: str) -> int | None:
    """Check ``--ckpt_path`` before Lightning reads it; the checkpoint's step (None: nothing to resume).

    A missing, corrupt or foreign file is a one-line error here, not a
    traceback later. ``fit`` resumes a checkpoint only into the configuration
    it was trained with: LightningCLI would otherwise put the checkpoint's
    hyperparameters over the config without a word. ``validate`` evaluates the
    checkpoint's own model, and says so when the config describes another.
    """
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None and subcommand == "fit" and (found := RunFolders(cfg.name).holds_a_run()):
        raise TinyLLMError(
            f"{found[0]} already belongs to the run {cfg.name!r}: resume it with --ckpt_path last, or start "
            "a new run with another --name (nothing was changed)"
        )
    if ckpt_path in (None, "hpc"):
        return None
    if ckpt_path == "best":  # Lightning knows "best" only within the process that trained; the file is on disk
        best = RunFolders(cfg.name).checkpoints / "best.ckpt"
        if not best.is_file():
            raise TinyLLMError(f"there is no {best}: pass a .ckpt file, or the --name of a run that has evaluated")
        cfg.ckpt_path = ckpt_path = str(best)
    if ckpt_path == "last":
        ckpt_path = RunFolders(cfg.name).checkpoints / "last.ckpt"
        if not ckpt_path.exists():
            return None  # Lightning starts fresh; before_fit says so
    elif not Path(ckpt_path).is_file():
        raise TinyLLMError(
            f"checkpoint {ckpt_path} is not a file: pass a .ckpt file, or 'last' to resume the run's newest"
        )
    path, ckpt = read_checkpoint(ckpt_path)  # weights_only=True, one-line errors
    saved = ckpt["hyper_parameters"]
    ours = cfg.model.as_dict()
    ours["arch"] = {k: v for k, v in ours["arch"].items() if k != "vocab_size"}  # known once the data is read
    # A key older checkpoints lack had its default then (session 4 added the optimizer, for one).
    defaults = {k: p.default for k, p in inspect.signature(GPTLitModule.__init__).parameters.items()}
    theirs = {**defaults, **saved, "arch": {k: v for k, v in saved["arch"].items() if k != "vocab_size"}}
    differ = [k for k in CHECKPOINT_MODEL_KEYS if _plain(ours.get(k)) != _plain(theirs.get(k))]
    if ours.get("optimizer") == theirs.get("optimizer") == "adamw":
        differ = [k for k in differ if k != "muon_lr"]  # unused by AdamW runs
    kind = (saved.get("tokenizer") or {}).get("kind")
    if subcommand == "fit":
        if kind is not None and kind != cfg.data.tokenizer:
            raise TinyLLMError(f"{path} was trained with the {kind} tokenizer, the config asks for {cfg.data.tokenizer}: "
                               "resume with the config it was trained with, or start a new run with another --name")  # fmt: skip
        if differ:
            raise TinyLLMError(f"{path} was trained with other settings than the config ({describe(differ, theirs, ours)}): "
                               "resume with the config it was trained with, or start a new run with another --name")  # fmt: skip
    elif "arch" in differ:
        print(f"tinyllm: validating {path.name} with its own architecture ({describe(['arch'], theirs, ours)})",
              file=sys.stderr)  # fmt: skip
    return int(ckpt.get("global_step") or 0)


def describe(keys: list[str], theirs: dict[str, Any], ours: dict[str, Any]) -> str:
    """Where checkpoint and config differ, in a few words: ``arch.n_layer: checkpoint 4, config 6``."""
    shown = []
    for key in keys:
        a, b = _plain(theirs.get(key)), _plain(ours.get(key))
        if isinstance(a, dict) and isinstance(b, dict):
            shown += [f"{key}.{k}: checkpoint {a.get(k)!r}, config {b.get(k)!r}" for k in sorted(a) if a.get(k) != b.get(k)]
        else:
            shown.append(f"{key}: checkpoint {a!r}, config {b!r}")
    return "; ".join(shown[:3])


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_output_dirs(trainer: Trainer, n_params: int) -> None:
    """Fail at start-up, not after an hour, when checkpoints or logs cannot be written."""
    # A checkpoint holds weights and two Adam moments in fp32; a save needs room for a second copy.
    needed = 2 * 3 * 4 * n_params
    dirs = {Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)}
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


def build_cli(args: list[str] | None, run: bool = True) -> TinyLLMCLI:
    """tinyllm's LightningCLI. ``run=False`` only builds model, data and trainer from ``--config`` args."""
    with warnings.catch_warnings():
        # Lightning warns when explicit args are given while sys.argv holds some: here that is the point.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        try:
            return TinyLLMCLI(
                GPTLitModule,
                ShakespeareDataModule,
                args=args,
                run=run,
                seed_everything_default=1337,
                save_config_kwargs={"overwrite": True},  # a resumed run re-saves its config
                parser_kwargs={"exit_on_error": False, "fit": {"description": FIT_DESCRIPTION}},
            )
        except ArgumentError as e:
            raise TinyLLMError(one_line(str(e))) from None
