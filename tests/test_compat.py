"""tinyllm.compat: every private Lightning/torch API we use still exists as we use it, and none is used elsewhere.

When an upgrade of Lightning or torch renames or changes one of these, this
file fails first, naming the API, instead of a resume or a benchmark failing
in some other way later.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop

import tinyllm
from tinyllm import compat
from tinyllm.core.config import GPTConfig
from tinyllm.core.model import CausalSelfAttention, RotaryEmbedding, causal_mask

PACKAGE = Path(tinyllm.__file__).parent


def _parameters(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_lightning_private_apis_are_as_compat_uses_them():
    assert _parameters(_TrainingEpochLoop._should_check_val_fx) == ["self", "data_fetcher"]
    assert _parameters(ModelCheckpoint._save_last_checkpoint) == ["self", "trainer", "monitor_candidates"]
    assert _parameters(ModelCheckpoint._monitor_candidates) == ["self", "trainer"]


def test_torch_int8_kernel_is_as_compat_uses_it():
    x = torch.randn(3, 64).to(torch.bfloat16)
    w = torch.randint(-127, 128, (8, 64), dtype=torch.int8)
    scale = torch.rand(8).to(torch.bfloat16)
    expected = (x.float() @ w.float().T) * scale.float()
    assert torch.allclose(compat.int8_weight_matmul(x, w, scale).float(), expected, rtol=2e-2, atol=2e-2)


def test_torch_compile_raises_at_a_graph_break_inside_compats_context():
    def broken(x: torch.Tensor) -> torch.Tensor:
        torch._dynamo.graph_break()
        return x + 1

    compiled = torch.compile(broken, backend="eager")
    with pytest.raises(Exception, match="graph break"), compat.error_on_graph_break():
        compiled(torch.ones(2))


class _Recorder(L.Callback):
    """Reads the compat answers inside a real fit, at every training batch."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, bool, int]] = []

    def on_train_batch_end(self, trainer: L.Trainer, *_: object) -> None:
        self.seen.append((trainer.global_step, compat.evaluation_follows_batch(trainer),
                          compat.training_batches_processed(trainer)))  # fmt: skip


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, _):
        self.log("val_loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_compat_answers_match_lightnings_behaviour(tmp_path: Path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 4)), batch_size=4)
    recorder = _Recorder()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    trainer = L.Trainer(max_steps=6, val_check_interval=3, limit_val_batches=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder, checkpoint])  # fmt: skip
    trainer.fit(_Tiny(), data, data)
    # Evaluations follow batches 3 and 6; the batch count is cumulative.
    assert recorder.seen == [(1, False, 1), (2, False, 2), (3, True, 3), (4, False, 4), (5, False, 5), (6, True, 6)]
    (tmp_path / "last.ckpt").unlink()
    compat.save_last_checkpoint(checkpoint, trainer)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 6


def _foreign_private_names(path: Path, ours: set[str]) -> list[str]:
    """``obj._name`` accesses in ``path`` whose ``_name`` tinyllm does not define itself."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if node.attr not in ours:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: .{node.attr}")
    return found


def _names_tinyllm_defines() -> set[str]:
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)  # self._pending = ...
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return names


def test_no_private_api_outside_compat():
    ours = _names_tinyllm_defines()
    foreign = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.name != "compat.py"
               for hit in _foreign_private_names(path, ours)]  # fmt: skip
    assert foreign == [], "private APIs of other packages belong in tinyllm/compat.py:\n" + "\n".join(foreign)


def test_the_private_name_check_can_fail():
    sample = PACKAGE / "compat.py"  # compat itself uses foreign private names, so the scan must find some
    assert _foreign_private_names(sample, _names_tinyllm_defines())


@pytest.mark.parametrize("module", ["lightning", "torch"])
def test_installed_versions_are_the_ones_compat_was_checked_against(module: str):
    version = {"lightning": L.__version__, "torch": torch.__version__}[module]
    major_minor = tuple(int(x) for x in version.split("+")[0].split(".")[:2])
    # pyproject.toml caps lightning below 2.7; a newer torch is allowed, the tests above guard it.
    assert major_minor >= ((2, 6) if module == "lightning" else (2, 4)) and (module != "lightning" or major_minor < (2, 7))


def test_training_compile_options_ask_for_256_bit_vectors_only_on_avx512(monkeypatch: pytest.MonkeyPatch):
    for capability, options in (("AVX512", {"cpp.simdlen": 256}), ("AVX2", {}), ("DEFAULT", {})):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert compat.training_compile_options() == options


@pytest.mark.slow
def test_compiled_bf16_attention_trains_with_the_eager_gradients():
    """Inductor's 512-bit CPU code gave NaN key gradients here (head width 64, RoPE, bf16); compat's options must not."""
    from torch._inductor import config as inductor

    assert hasattr(inductor.cpp, "simdlen")  # the option compat sets, where compat expects it
    torch.manual_seed(0)
    attention = CausalSelfAttention(GPTConfig(n_embd=128, n_head=2, block_size=64), layer_idx=0)
    rope = RotaryEmbedding(attention.head_dim, 64, base=10000.0).angles(torch.arange(64))
    x, mask = torch.randn(4, 64, 128), causal_mask(64)

    def gradients(forward) -> dict[str, torch.Tensor]:
        attention.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            forward(x, mask, rope).float().pow(2).mean().backward()
        return {name: p.grad.clone() for name, p in attention.named_parameters()}

    eager = gradients(attention)
    compiled = gradients(torch.compile(attention, options=compat.training_compile_options()))
    for name, grad in eager.items():
        assert torch.isfinite(compiled[name]).all(), name
        torch.testing.assert_close(compiled[name], grad, atol=1e-4, rtol=1e-2, msg=name)


def test_lightnings_own_leafspec_deprecation_is_silenced_and_nothing_else():
    import warnings

    from tinyllm.compat import ignore_lightnings_own_deprecations

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ignore_lightnings_own_deprecations()
        # Lightning 2.6's words (lightning/pytorch/utilities/_pytree.py), as torch 2.13 deprecates LeafSpec
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
                      "treespec.is_leaf()` instead.", FutureWarning)  # fmt: skip
        warnings.warn("another deprecation", FutureWarning)
    assert [str(w.message) for w in seen] == ["another deprecation"]


def test_unrepeated_sampler_shares_the_windows_without_padding():
    from torch.utils.data import DistributedSampler

    shares = [list(compat.unrepeated_sampler(range(7), num_replicas=3, rank=r)) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]  # torch's own would pad the last two to 3 with repeats
    # Lightning leaves a DistributedSampler in place instead of wrapping it in one that pads
    assert isinstance(compat.unrepeated_sampler(range(7), 3, 0), DistributedSampler)
