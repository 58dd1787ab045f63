"""tinyllm's LightningCLI: ``fit`` and ``validate``, with a run's machinery wired in code.

A config states only what makes a run what it is (model, data, schedule). What
every run needs, and what correctness depends on, is added here, so that no
YAML can drop it by accident:

* **One run name** (``name: quick``) decides ``checkpoints/quick/`` and
  ``logs/quick/``, nothing else does.
* **Always on:** atomic checkpoint writes, ``best.ckpt`` (lowest val loss),
  ``last.ckpt`` every N steps and on Ctrl-C (``ResumeCheckpoint``, listed
  after "best" so it saves the evaluation's outcome), the RNG state, and for
  ``fit`` a TensorBoard logger that, on resume, purges what the killed run
  logged after its checkpoint (``validate`` prints its figures, logs none).
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
import logging
import os
import re
import shutil
import signal
import socket
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from filelock import FileLock, Timeout
from jsonargparse import ArgumentError, lazy_instance
from jsonargparse.typing import PositiveInt
from lightning.pytorch import Trainer
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint, Timer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
import yaml

from tinyllm.compat import ignore_lightnings_own_deprecations
from tinyllm.core.checkpoint import (
    BEST_CKPT, LAST_CKPT, TRAINING_HPARAMS, budget_seconds, checkpoint_hparams, checkpoint_step, read_checkpoint
)
from tinyllm.core.defaults import SEED, check_seed
from tinyllm.core.kernels import reuse_freed_memory
from tinyllm.core.tokenizers import stored_spec
from tinyllm.errors import PROG, Stopped, TinyLLMError, help_formatter, one_line, out_of_memory
from tinyllm.files import check_writable_folder, user_path
from tinyllm.formats.folder import export_dir_of
from tinyllm.training.callbacks import (
    AtomicCheckpointIO, AttentionImages, GenerationSamples, ResumeCheckpoint, RNGState, SameResumeEverywhere,
    StepProgressBar, TimeBudget, TokenThroughput, describe_os_error,
)  # fmt: skip
from tinyllm.training.data import ShakespeareDataModule
from tinyllm.training.metrics import EVALUATION_METRICS, VAL_BPB, VAL_LOSS, bpb_in_nats
from tinyllm.training.module import GPTLitModule
from tinyllm.training.precision import choose_precision, probe_key, training_step_probe

# The optional callbacks: config key -> (class, default arguments). `null` in a config switches one off.
OPTIONAL_CALLBACKS: dict[str, tuple[type[Callback], dict[str, Any] | None]] = {
    "early_stopping": (EarlyStopping, {"monitor": VAL_LOSS, "mode": "min", "patience": 3}),
    "lr_monitor": (LearningRateMonitor, {"logging_interval": "step"}),
    "throughput": (TokenThroughput, {}),
    "progress_bar": (StepProgressBar, {}),
    "samples": (GenerationSamples, {}),
    "attention_images": (AttentionImages, None),  # None: off unless switched on
}
TRAINER_DEFAULTS = {
    "trainer.max_epochs": -1,  # training draws endless random windows: the length is max_steps, not epochs
    "trainer.check_val_every_n_epoch": None,  # evaluate every val_check_interval batches instead
    "trainer.log_every_n_steps": 10,
}
RUN_CONFIG = "config.yaml"  # the file each run's config is saved to, in its log folder
CHECKPOINT_MODEL_KEYS = ("arch", *TRAINING_HPARAMS)  # a resume must match
RESUME_OR_RENAME = "resume with the config it was trained with, or start a new run with another --name"


@dataclass(frozen=True)
class RunFolders:
    """Where the run called ``name`` writes (relative to the working directory)."""

    name: str
    LOGS_ROOT = "logs"  # what `tensorboard --logdir logs` reads: every run's curves side by side

    @property
    def checkpoints(self) -> Path:
        return Path("checkpoints") / self.name

    @property
    def logs(self) -> Path:
        return Path(self.LOGS_ROOT) / self.name

    @property
    def last(self) -> Path:
        return self.checkpoints / LAST_CKPT

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST_CKPT

    @property
    def config(self) -> Path:
        """The full config of the run, as LightningCLI saved it (``--print_config`` form)."""
        return self.logs / RUN_CONFIG

    @property
    def lock(self) -> Path:
        """Held by the process that trains the run; ``lock_owner`` says which process that is."""
        return self.checkpoints / ".lock"

    @property
    def lock_owner(self) -> Path:
        return self.checkpoints / ".lock.owner"

    def holds_a_run(self) -> list[str]:
        """What an earlier run left: its checkpoints, else its TensorBoard events with curves in them.

        Logs alone are a run too: one whose checkpoints were moved away, or
        that was stopped before its first save; a new run would hide their
        curves and replace their config.yaml. An events file without a value
        is a start that failed at set-up (Lightning opens the file first).
        """
        return [str(p) for p in sorted(self.checkpoints.glob("*.ckpt"))] or [
            str(p) for p in sorted(self.logs.glob("events.out.tfevents.*")) if holds_values(p)
        ]


def holds_values(events: Path) -> bool:
    """Does the TensorBoard events file record any value (a scalar, a text, hyperparameters)?"""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # only for a folder in use

    try:
        return any(event.summary.value for event in EventFileLoader(str(events)).Load())
    except Exception:  # a damaged events file still belongs to someone: keep it
        return True


def run_options(name: str = "run", save_every_n_steps: Optional[PositiveInt] = None) -> None:
    """tinyllm's own options of a run, beside Lightning's (the CLI's help is generated from this signature).

    Args:
        name: the run: checkpoints/<name>/ and logs/<name>/.
        save_every_n_steps: last.ckpt every N optimizer steps (default: at every evaluation).
    """


class TinyLLMCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # test/predict are left out: there is no test split, and prediction is `generate`.
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name in ("fit", "validate")}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_function_arguments(run_options, as_group=False)
        for key, (cls, init) in OPTIONAL_CALLBACKS.items():
            default = None if init is None else lazy_instance(cls, **init)
            state = "off by default: give it to switch it on" if init is None else "null switches it off"
            summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
            text = f"{cls.__name__}: {summary} ({state})"
            parser.add_argument(f"--{key}", type=Optional[cls], default=default, help=text)
        # The model's context decides the data windows; the data decides the vocabulary
        # and tokenizer. Linked, so nothing is typed twice or can disagree.
        parser.link_arguments("model.arch.block_size", "data.block_size")
        parser.link_arguments("data.vocab_size", "model.arch.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.tokenizer_state", "model.tokenizer", apply_on="instantiate")
        parser.set_defaults(TRAINER_DEFAULTS)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        if sub:
            check_run_name(self.config[sub].name)
            check_trainer_options(self.config[sub].trainer)
            seed = self.config[sub].seed_everything
            if isinstance(seed, int) and not isinstance(seed, bool):  # true: a random seed, false: none
                check_seed(seed, "--seed_everything")
        self.resume_step = check_ckpt_path(self.config[sub], sub) if sub else None  # a refusal here changes nothing
        if sub == "fit" and not self.config[sub].trainer.fast_dev_run:
            hold_the_run(RunFolders(self.config[sub].name))

    def instantiate_classes(self) -> None:
        # jsonargparse wraps errors raised while building callbacks or models (a bad option in the
        # YAML) in multi-line ValueErrors; surface our own one-line message instead.
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, RuntimeError) as e:  # all raised by a bad class or option in the config
            if out_of_memory(e):  # a model too large to build (block_size 100000): main's out-of-memory line
                raise
            cause: BaseException | None = e
            while cause is not None and not isinstance(cause, TinyLLMError):
                cause = cause.__cause__ or cause.__context__
            raise TinyLLMError(one_line(str(cause or e))) from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        run = RunFolders(cfg["name"])
        every = cfg["save_every_n_steps"] or evaluation_interval_in_steps(cfg["trainer"])
        optional = [cfg[key] for key in OPTIONAL_CALLBACKS if cfg[key] is not None]
        check_monitors([*optional, *(cfg["trainer"].get("callbacks") or [])])
        callbacks = [*run_machinery(run, every, self.resume_step), *optional, *(cfg["trainer"].get("callbacks") or [])]
        plugins = [AtomicCheckpointIO(), *(cfg["trainer"].get("plugins") or [])]
        if cfg["trainer"].get("precision") is None:
            parsed = self.config[self.subcommand] if self.subcommand else self.config
            kwargs["precision"] = parsed.trainer.precision = self.auto_precision(cfg)
        logger = cfg["trainer"].get("logger")
        if self.subcommand == "validate" and logger is True:
            raise TinyLLMError("validate prints its figures and logs none by default (in fit's TensorBoard curves "
                               "they would be a point at step 0): drop --trainer.logger true, or name a logger "
                               "such as --trainer.logger CSVLogger --trainer.logger.save_dir logs")
        if self.subcommand == "validate" and logger is None:
            logger = False  # it prints its figures; in fit's curves they would be a point at step 0
            self.save_config_callback = None  # without a log folder it would write config.yaml into the cwd
        elif logger is None or logger is True:  # the default: TensorBoard in logs/<name>/, continued on resume
            # On resume, TensorBoard hides what the killed run logged after its checkpoint (purge_step), so each
            # curve stays one line. A plain fresh start never meets old logs (refuse_a_second_run); --ckpt_path
            # last with nothing left to resume (a damaged last.ckpt moved away) starts over and hides them all.
            purge_step = self.resume_step if self.resume_step is not None else (0 if run.holds_a_run() else None)
            logger = TensorBoardLogger(run.LOGS_ROOT, name=run.name, version="", purge_step=purge_step)
        return super().instantiate_trainer(callbacks=callbacks, plugins=plugins, logger=logger, **kwargs)

    def auto_precision(self, cfg: dict[str, Any]) -> str:
        """The precision for the device: by the table, or on a bf16-capable CPU by timing this model's own step."""
        # validate asks too: for the same config it gets the answer fit got (cached), so it evaluates as training did.
        batch_size = self.datamodule.batch_size
        probe = training_step_probe(self.model, batch_size)
        key = probe_key(self.model.model.config, batch_size)
        precision, why = choose_precision(str(cfg["trainer"].get("accelerator", "auto")), probe, key)
        print(f"tinyllm: precision auto -> {precision} ({why})", file=sys.stderr)
        return precision

    def after_validate(self) -> None:
        # Lightning's table gives the loss per token, which differs between tokenizers; results/ and the README
        # give it per byte of text, the scale every tokenizer shares.
        bpb = self.trainer.callback_metrics.get(VAL_BPB)
        if bpb is not None and self.trainer.is_global_zero:
            print(f"{VAL_LOSS} is per token; per byte of text (a character, on ASCII text) it is "
                  f"{bpb_in_nats(float(bpb)):.4f} nats ({VAL_BPB} × ln 2), the scale of results/ and the README")

    def after_fit(self) -> None:
        # Lightning says why max_steps or max_time ended a run, but not early stopping: the run just ends.
        stopper = self.trainer.early_stopping_callback
        why = getattr(stopper, "stopping_reason_message", None)
        if why and self.trainer.is_global_zero:
            print(f"tinyllm: stopped early at step {self.trainer.global_step}: {one_line(why)} (--early_stopping "
                  "null trains to the end)", file=sys.stderr)

    def before_fit(self) -> None:
        cfg = self.config[self.subcommand]
        run = RunFolders(cfg.name)
        if not self.trainer.fast_dev_run:  # Lightning's smoke test writes nothing: it leaves no run behind
            check_output_dirs(self.trainer, self.model.model.num_parameters())
        if cfg.ckpt_path == "last" and not run.last.exists():
            print(f"tinyllm: no checkpoint to resume in {run.checkpoints.resolve()}: starting a new run",
                  file=sys.stderr)
        nodes = self.trainer.num_nodes
        if nodes > 1 and self.trainer.local_rank == 0:  # the first collective waits, silently, for every node
            env = self.trainer.strategy.cluster_environment
            print(f"tinyllm: node {self.trainer.node_rank} of {nodes}: waiting until all {nodes} run this command "
                  f"(each with its NODE_RANK) and meet at {env.main_address}:{env.main_port}", file=sys.stderr)


_HELD: dict[Path, FileLock] = {}  # the runs this process trains: held until it exits
RANK_VARIABLES = ("RANK", "NODE_RANK", "LOCAL_RANK", "SLURM_PROCID")
WHERE_A_RUN_WRITES = "run name (--name) or working directory"  # checkpoints/NAME and logs/NAME, relative to it


def hold_the_run(run: RunFolders) -> None:
    """Lock the run folder for this process's life: a second process that would train the same run is refused.

    An OS lock (``flock`` through ``filelock``) dies with its process, so a run
    killed by SIGKILL never blocks its own resume. Under DDP only global rank 0
    writes the run, and only it locks. (On a network file system such as NFS or
    a mounted Drive, locks are only as good as that file system's.)
    """
    if any(os.environ.get(v, "0") != "0" for v in RANK_VARIABLES):
        return
    key = run.checkpoints.resolve()
    if key in _HELD:
        return
    owner = run.lock_owner
    check_writable_folder(run.checkpoints, WHERE_A_RUN_WRITES)
    try:
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        lock = FileLock(run.lock, timeout=0)
        lock.acquire()
    except Timeout:
        raise already_training(run) from None
    except OSError as e:
        raise TinyLLMError(f"cannot lock {run.lock} ({e.strerror or e}): choose a writable folder "
                           "with --name, or run from another working directory") from None  # fmt: skip
    owner.write_text(f"process {os.getpid()} on {socket.gethostname()}\n")
    _HELD[key] = lock


def check_run_name(name: str) -> None:
    """A run name is a folder below checkpoints/ and logs/ (``quick``, ``swaps-cpu/modern-1337``), never outside."""
    parts = name.replace("\\", "/").split("/")
    if not name.strip() or name.startswith(("/", "~")) or any(p.strip() in ("", ".", "..") for p in parts):
        raise TinyLLMError(f"--name {name!r} is not a run name: give a folder name below checkpoints/ and logs/, "
                           "with '/' between folders if any, e.g. --name quick or --name tries/quick-2")  # fmt: skip


def check_monitors(callbacks: list[Callback]) -> None:
    """Early stopping watches a metric an evaluation logs: Lightning would raise at the first evaluation, not now."""
    for cb in callbacks:
        if isinstance(cb, EarlyStopping) and cb.monitor not in EVALUATION_METRICS:
            raise TinyLLMError(f"--early_stopping.monitor {cb.monitor!r} is not logged at evaluation: use one of "
                               f"{', '.join(EVALUATION_METRICS)}")  # fmt: skip


def check_trainer_options(trainer: Any) -> None:
    """Options Lightning would accept and then fail on (a division by zero) or obey by doing nothing."""
    interval = trainer.get("val_check_interval")
    if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval <= 0:
        raise TinyLLMError(f"--trainer.val_check_interval must be a positive number of batches (or a fraction of "
                           f"one epoch in (0, 1]), got {interval}")  # fmt: skip
    budget = trainer.get("max_time")
    if isinstance(budget, str) and re.fullmatch(r"[0:]+", budget.strip()):
        raise TinyLLMError(f"--trainer.max_time {budget} is a time budget of zero: give DD:HH:MM:SS, e.g. 00:00:05:00")
    check_accelerator(trainer.get("accelerator"))
    devices = trainer.get("devices")
    if trainer.get("strategy") == "single_device" and str(devices) not in ("1", "auto", "None", "[0]"):
        raise TinyLLMError(f"--trainer.strategy single_device trains in one process, not on --trainer.devices "
                           f"{devices}: use --trainer.strategy ddp for several, or drop one of the two")  # fmt: skip


def check_accelerator(accelerator: Any) -> None:
    """An accelerator this machine lacks is refused before the precision is chosen for it (Lightning would
    refuse it after, without advice, or with a traceback for a TPU)."""
    if not isinstance(accelerator, str) or accelerator.lower() in ("auto", "cpu"):
        return  # nothing to probe: the common case
    present = {"cuda": CUDAAccelerator.is_available(), "mps": MPSAccelerator.is_available(),
               "tpu": XLAAccelerator.is_available()}  # fmt: skip
    present["gpu"] = present["cuda"] or present["mps"]
    if not present.get(accelerator.lower(), True):
        raise TinyLLMError(f"--trainer.accelerator {accelerator}: this machine has none that torch can use; leave it "
                           "auto (the best there is) or give cpu")  # fmt: skip


def already_training(run: RunFolders) -> TinyLLMError:
    owner = run.lock_owner
    holder = owner.read_text().strip() if owner.is_file() else "another process"
    return TinyLLMError(f"the run {run.name!r} is already training ({holder}): wait for it to finish or stop it, "
                        "or train another --name")  # fmt: skip


def refuse_if_training(run: RunFolders) -> None:
    """Refuse now if another process holds the run's lock (test and release: this process takes it later)."""
    if run.lock.is_file() and run.checkpoints.resolve() not in _HELD:
        lock = FileLock(run.lock, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise already_training(run) from None
        except OSError:
            return  # hold_the_run says what is wrong with the folder
        lock.release()


def run_machinery(run: RunFolders, every_n_steps: int, resume_step: int | None = None) -> list[Callback]:
    """The callbacks every run has, in the order correctness needs: "best" before the resume checkpoint."""
    best = ModelCheckpoint(dirpath=str(run.checkpoints), filename=Path(BEST_CKPT).stem, monitor=VAL_LOSS, mode="min",
                           save_top_k=1, enable_version_counter=False)  # fmt: skip
    return [best, ResumeCheckpoint(str(run.checkpoints), every_n_steps), RNGState(), TimeBudget(),
            SameResumeEverywhere(resume_step)]


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
    if subcommand == "fit" and cfg.get("ckpt_path") is None:
        refuse_a_second_run(cfg.name)
    path = resolve_ckpt_path(cfg)
    if path is None and subcommand == "validate":  # Lightning would evaluate the untrained model, and exit 0
        where = RunFolders(cfg.name).last
        raise TinyLLMError(f"there is no {where} to validate: pass --ckpt_path last|best|FILE|FOLDER, with the "
                           "run's --name" if cfg.get("ckpt_path") == "last" else
                           "validate needs a checkpoint: pass --ckpt_path last|best|FILE|FOLDER "
                           "(an exported folder)")  # fmt: skip
    if path is None:
        return None
    path, ckpt = read_checkpoint(path)  # weights_only=True, one-line errors
    if subcommand == "validate":  # last as its file: LightningCLI takes the architecture from a file only
        cfg.ckpt_path = str(path)
    differ, theirs, ours = settings_differences(ckpt, cfg)
    if subcommand == "fit":
        check_same_tokenizer(path, ckpt, cfg)
        check_same_budget(path, ckpt, cfg.trainer.get("max_time"))
        if differ:
            raise TinyLLMError(f"{path} was trained with other settings than the config "
                               f"({describe(differ, theirs, ours)}): {RESUME_OR_RENAME}")
    elif "arch" in differ:
        print(f"tinyllm: validating {path.name} with its own architecture ({describe(['arch'], theirs, ours)})",
              file=sys.stderr)  # fmt: skip
    return checkpoint_step(ckpt)


def refuse_a_second_run(name: str) -> None:
    """A new ``fit`` never writes into a folder that holds another run's checkpoints or logs."""
    if any(os.environ.get(v, "0") != "0" for v in RANK_VARIABLES):
        return  # under DDP rank 0 checked before it started the others, and writes what they would meet
    found = RunFolders(name).holds_a_run()
    if found and found[0].endswith(".ckpt"):
        raise TinyLLMError(
            f"{found[0]} already belongs to the run {name!r}: resume it with --ckpt_path last, or start "
            "a new run with another --name (nothing was changed)"
        )
    if found:
        refuse_if_training(RunFolders(name))  # a run still before its first checkpoint: say that, not this
        raise TinyLLMError(
            f"{RunFolders(name).logs} holds the logs of an earlier run {name!r} and there is no checkpoint to resume: "
            "move that folder away, or start a new run with another --name (nothing was changed)"
        )


def resolve_ckpt_path(cfg: Any) -> Path | None:
    """The checkpoint file ``--ckpt_path`` names (``last``, ``best`` or a path); None when there is nothing to resume.

    ``best`` is rewritten to its file in ``cfg``: Lightning knows "best" only within the process that trained.
    """
    ckpt_path = cfg.get("ckpt_path")
    run = RunFolders(cfg.name)
    if ckpt_path in (None, "hpc"):
        return None
    if ckpt_path == "best":
        best = run.best
        if not best.is_file():
            raise TinyLLMError(f"there is no {best}: pass a .ckpt file, or the --name of a run that has evaluated")
        cfg.ckpt_path = str(best)
        return best
    if ckpt_path == "last":
        if run.last.exists():
            return run.last
        newest = newest_checkpoint(run)  # last.ckpt moved away (damaged): never start over the others
        if newest is None:
            return None  # nothing to resume: Lightning starts fresh; before_fit says so
        path, step = newest
        print(f"tinyllm: no {run.last}: resuming from {path.name}, the newest checkpoint there (step {step})",
              file=sys.stderr)
        cfg.ckpt_path = str(path)
        return path
    path = user_path(ckpt_path)
    if export_dir_of(path) is not None:  # validate turned it into a .ckpt before this: this is fit
        raise TinyLLMError(f"{ckpt_path} is an exported model, with the weights but not the optimizer and loop state "
                           "a resume needs: fit resumes from its run's checkpoints/NAME/last.ckpt; validate takes the "
                           "folder as --ckpt_path on the command line")  # fmt: skip
    if path.is_dir():
        raise TinyLLMError(f"{ckpt_path} is a folder but not an exported model: pass a .ckpt file in it, or "
                           f"--name NAME --ckpt_path last for the run checkpoints/NAME")  # fmt: skip
    if not path.is_file():
        raise TinyLLMError(f"checkpoint {ckpt_path} is not a file: pass a .ckpt file, or 'last' for the run's newest")
    cfg.ckpt_path = str(path)  # Lightning opens it as given: no shell expanded a ~ in a YAML or after an =
    return path


def newest_checkpoint(run: RunFolders) -> tuple[Path, int] | None:
    """The run's readable checkpoint of the latest step (best.ckpt, on_exception.ckpt, a copy), with its step."""
    found = []
    for path in sorted(run.checkpoints.glob("*.ckpt")):
        try:
            found.append((int(read_checkpoint(path)[1].get("global_step", 0)), path))
        except TinyLLMError:  # damaged too: the next one may do
            continue
    if not found:
        return None
    step, path = max(found)
    return path, step


def settings_differences(ckpt: dict[str, Any], cfg: Any) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """The model settings (``CHECKPOINT_MODEL_KEYS``) in which checkpoint and config differ, and both sides.

    The vocabulary is left out (it is known once the data is read), and a key
    older checkpoints lack counts as its default then.
    """
    saved = checkpoint_hparams(ckpt)
    ours = cfg.model.as_dict()
    ours["arch"] = {k: v for k, v in ours["arch"].items() if k != "vocab_size"}
    defaults = {k: p.default for k, p in inspect.signature(GPTLitModule.__init__).parameters.items()}
    theirs = {**defaults, **saved, "arch": {k: v for k, v in saved["arch"].items() if k != "vocab_size"}}
    differ = [k for k in CHECKPOINT_MODEL_KEYS if _plain(ours.get(k)) != _plain(theirs.get(k))]
    if ours.get("optimizer") == theirs.get("optimizer") == "adamw":
        differ = [k for k in differ if k != "muon_lr"]  # unused by AdamW runs
    return differ, theirs, ours


def check_same_tokenizer(path: Path, ckpt: dict[str, Any], cfg: Any) -> None:
    """A run resumes with the tokenizer it was trained with (a prepared folder's is checked when its data loads)."""
    data_path = cfg.data.get("path")
    if data_path is not None and user_path(data_path).is_dir():
        return
    spec = stored_spec(checkpoint_hparams(ckpt).get("tokenizer") or {})
    if spec is not None and spec != cfg.data.tokenizer:
        raise TinyLLMError(f"{path} was trained with the {spec} tokenizer, the config asks for "
                           f"{cfg.data.tokenizer}: {RESUME_OR_RENAME}")


def check_same_budget(path: Path, ckpt: dict[str, Any], max_time: Any) -> None:
    """A time-budget run resumes with its budget: the learning rate follows the share of it used."""
    saved = budget_seconds(ckpt)
    ours = Timer(max_time).time_remaining() if max_time else None  # Lightning's reading of --trainer.max_time
    if saved is not None and (ours is None or abs(ours - saved) > 0.01):
        asked = f"{ours:g} s" if ours is not None else "none"
        raise TinyLLMError(f"{path} was trained on a time budget of {saved:g} s, the config gives {asked}: resume "
                           "with the --trainer.max_time it was trained with (its learning rate follows the share "
                           "of the budget used), or start a new run with another --name")  # fmt: skip


def describe(keys: list[str], theirs: dict[str, Any], ours: dict[str, Any]) -> str:
    """Where checkpoint and config differ, in a few words: ``arch.n_layer: checkpoint 4, config 6``."""
    shown = []
    for key in keys:
        a, b = _plain(theirs.get(key)), _plain(ours.get(key))
        if isinstance(a, dict) and isinstance(b, dict):
            shown += [f"{key}.{k}: checkpoint {a.get(k)!r}, config {b.get(k)!r}"
                      for k in sorted(a) if a.get(k) != b.get(k)]
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
        check_writable_folder(d, WHERE_A_RUN_WRITES)
        d.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(d).free
        if free < needed:
            raise TinyLLMError(
                f"only {free / 1e6:.0f} MB free at {d}, a checkpoint needs about {needed / 1e6:.0f} MB: free some space"
            )


def expand_configs(args: list[str]) -> list[str]:
    """``--config child.yaml`` whose file starts from another (``config: cpu.yaml``) as ``--config`` of each,
    base first.

    A recipe states only what differs from the one it names; the names resolve
    beside the file that gives them. (jsonargparse's own nested configs would
    replace a whole group such as ``trainer`` instead of merging into it.)
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--config" and i + 1 < len(args):
            out += _config_chain(args[i + 1], set())
            i += 2
            continue
        if arg.startswith("--config="):
            out += _config_chain(arg.split("=", 1)[1], set())
        else:
            out.append(arg)
        i += 1
    return out


def _config_chain(value: str, seen: set[Path]) -> list[str]:
    path = user_path(value)
    if not path.is_file():
        return ["--config", value]  # not a file (or inline YAML): jsonargparse reports it
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:  # jsonargparse would fail on it with a traceback
        why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else e.strerror or str(e)
        raise TinyLLMError(f"--config {value} cannot be read ({why}): pass a YAML config such as "
                           "configs/quick.yaml") from None  # fmt: skip
    except yaml.YAMLError:
        return ["--config", str(path)]  # jsonargparse names the line
    if not isinstance(recipe, dict) or not isinstance(recipe.get("config"), str):
        return ["--config", str(path)]
    if path.resolve() in seen:
        raise TinyLLMError(f"{path} names itself among the configs it starts from: break the cycle")
    base = path.parent / recipe.pop("config")
    if not base.is_file():
        raise TinyLLMError(f"{path} starts from {base}, which is not a file: fix its `config:` line")
    return [*_config_chain(str(base), seen | {path.resolve()}), "--config", yaml.safe_dump(recipe, sort_keys=False)]


def _one_line_thread_error(args: threading.ExceptHookArgs) -> None:
    """A logger's writer thread that hits a full disk says so in one line, not a traceback (the run then fails too)."""
    if isinstance(args.exc_value, OSError):
        print(f"tinyllm: {describe_os_error(args.exc_value)}", file=sys.stderr)
    else:
        threading.__excepthook__(args)


def report_thread_errors_in_one_line() -> None:
    """Install :func:`_one_line_thread_error` (once: a process may build several CLIs)."""
    threading.excepthook = _one_line_thread_error


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


def hide_lightnings_tips() -> None:
    """Lightning's advertisement for its cloud logger at every start: nothing a run needs, in every run's output."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in logger.filters):
        logger.addFilter(_NoTips())


def build_cli(args: list[str] | None, run: bool = True, description: str | None = None) -> TinyLLMCLI:
    """tinyllm's LightningCLI. ``run=False`` only builds model, data and trainer from ``--config`` args.

    ``description``: what ``--help`` shows for the subcommand ``args[0]`` (its function's docstring).
    """
    report_thread_errors_in_one_line()
    reuse_freed_memory()  # a CPU step's activations would otherwise fault in fresh pages every step
    with warnings.catch_warnings():
        # Lightning warns when explicit args are given while sys.argv holds some: here that is the point.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        # ModelCheckpoint warns of any file in its folder, and a new run's folder already holds its lock.
        # A folder that holds another run is refused before this (refuse_a_second_run).
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        # A new run given --ckpt_path last: before_fit says so; Lightning's hint (save_last=True) is wired in already.
        warnings.filterwarnings("ignore", message=r'\.fit\(ckpt_path="last"\) is set, but there is no last checkpoint')
        if args and args[0] == "validate":  # an evaluation restores the weights only: the callbacks' state is moot
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`, callbacks used to create")
        # The evaluation figures come from a metric synced across processes: every rank logs the same value.
        synced = "|".join(EVALUATION_METRICS)
        warnings.filterwarnings("ignore", message=rf"It is recommended to use `self.log\('({synced})'")
        # Under bf16-mixed the weights are float32, so the summary's 32-bit size, which it warns of, is the true one.
        warnings.filterwarnings("ignore", message="Precision .* is not supported by the model summary")
        ignore_lightnings_own_deprecations()
        hide_lightnings_tips()
        try:
            return TinyLLMCLI(
                GPTLitModule,
                ShakespeareDataModule,
                args=expand_configs(args) if args is not None else None,
                run=run,
                seed_everything_default=SEED,
                # The module's own configure_optimizers (Muon/AdamW, the budget's schedule) is the recipe:
                # LightningCLI's generic --optimizer/--lr_scheduler would silently replace both.
                auto_configure_optimizers=False,
                save_config_kwargs={"config_filename": RUN_CONFIG, "overwrite": True},  # a resume re-saves it
                parser_kwargs={"exit_on_error": False, "prog": PROG, "formatter_class": help_formatter(),
                               **({args[0]: {"description": description, "formatter_class": help_formatter()}}
                                  if description and args else {})},
            )
        except ArgumentError as e:
            raise TinyLLMError(one_line(str(e))) from None
        except OSError as e:  # a disk or folder that failed outside a checkpoint save (a log file, say)
            raise TinyLLMError(describe_os_error(e)) from None
        except MisconfigurationException as e:  # Lightning refuses a trainer option (max_time "abc", a GPU here)
            raise TinyLLMError(one_line(str(e))) from None
        except SIGTERMException:  # a SystemExit with no status: the process would exit 0, silently
            raise Stopped("stopped by SIGTERM; the steps done (if any) are saved in last.ckpt: resume with "
                          "--ckpt_path last",
                          128 + signal.SIGTERM) from None  # fmt: skip
        except SystemExit as e:
            if isinstance(e.__context__, KeyboardInterrupt):  # Lightning handles Ctrl-C, then exits with status 1
                saved = "; the steps done (if any) are saved in last.ckpt: resume with --ckpt_path last"
                raise Stopped(f"interrupted (Ctrl-C){saved if args and args[0] == 'fit' else ''}", 130) from None
            raise
