"""The optimizers: which parameters each update touches, and Muon+AdamW acting as one optimizer."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tinyllm.core.config import GPTConfig
from tinyllm.core.model import GPT
from tinyllm.core.optim import MuonWithAdamW, build_optimizer
from tinyllm.errors import TinyLLMError
from tests.helpers.models import TINY


def _model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides}))


def _names(model: GPT, group: dict) -> set[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in group["params"]}


def _train(model: GPT, optimizer: torch.optim.Optimizer, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randint(0, model.config.vocab_size, (2, 8), generator=gen)
        loss = F.cross_entropy(model(x).flatten(0, 1), x.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_adamw_decays_matrices_and_embeddings_but_not_gains_or_biases():
    model = _model(norm="layernorm", bias=True, pos_emb="learned")
    opt = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"decay", "no_decay"}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    decayed, kept = _names(model, groups["decay"]), _names(model, groups["no_decay"])
    assert "embed_tokens.weight" in decayed and "embed_positions.weight" in decayed
    assert "layers.0.self_attn.q_proj.weight" in decayed and "layers.0.mlp.down_proj.weight" in decayed
    assert "layers.0.input_norm.weight" in kept and "layers.0.self_attn.q_proj.bias" in kept and "norm.bias" in kept
    assert decayed.isdisjoint(kept) and len(decayed) + len(kept) == len(list(model.parameters()))
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["lr"] == 1e-3


def test_muon_takes_the_hidden_matrices_and_adamw_the_tables_and_gains():
    model = _model(tie_embeddings=False, pos_emb="learned")
    opt = build_optimizer(model, "muon", lr=1e-3, weight_decay=0.1, muon_lr=0.02)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"muon", "embedding", "no_decay"}
    hidden = _names(model, groups["muon"])
    assert hidden == {n for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("layers.")}
    assert "layers.0.self_attn.q_proj.weight" in hidden and "layers.0.mlp.gate_proj.weight" in hidden
    assert _names(model, groups["embedding"]) == {"embed_tokens.weight", "embed_positions.weight", "lm_head.weight"}
    assert groups["muon"]["lr"] == 0.02 and groups["embedding"]["lr"] == 1e-3
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_a_scheduler_on_the_pair_scales_both_inner_optimizers_even_after_loading_state():
    opt = build_optimizer(_model(), "muon", lr=1e-3, weight_decay=0.1, muon_lr=0.02)
    assert isinstance(opt, MuonWithAdamW)
    opt.load_state_dict(opt.state_dict())  # loading replaces the inner group dicts
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    opt.step()  # no gradients yet: moves nothing, but keeps the usual order (step, then schedule)
    scheduler.step()
    assert opt.muon.param_groups[0]["lr"] == 0.01 and opt.adamw.param_groups[0]["lr"] == 5e-4


def test_muon_state_round_trips_so_a_resumed_run_continues_exactly():
    uninterrupted = _model()
    opt = build_optimizer(uninterrupted, "muon", lr=1e-3, weight_decay=0.1)
    _train(uninterrupted, opt, 3, seed=1)
    saved_model, saved_opt = copy.deepcopy(uninterrupted.state_dict()), copy.deepcopy(opt.state_dict())
    _train(uninterrupted, opt, 3, seed=2)

    resumed = _model(seed=99)
    resumed.load_state_dict(saved_model)
    opt2 = build_optimizer(resumed, "muon", lr=1e-3, weight_decay=0.1)
    opt2.load_state_dict(saved_opt)
    assert opt2.muon.state  # the momentum buffers came back
    _train(resumed, opt2, 3, seed=2)
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_muon_moves_every_parameter_and_lowers_the_loss():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    opt = build_optimizer(model, "muon", lr=3e-3, weight_decay=0.0, muon_lr=0.02)
    x = torch.randint(0, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x).flatten(0, 1), x.flatten())
        losses.append(loss.item())
        loss.backward()
        opt.step(lambda: None)  # Lightning's path: a closure (here a no-op) that the pair runs once
        opt.zero_grad(set_to_none=True)
    assert losses[-1] < losses[0] * 0.7
    assert all(not torch.equal(before[n], p) for n, p in model.state_dict().items())


def test_muon_on_a_torch_without_it_is_refused_with_a_way_out(monkeypatch: pytest.MonkeyPatch):
    from tinyllm.commands.experiment import swaps

    monkeypatch.delattr(torch.optim, "Muon")
    with pytest.raises(TinyLLMError, match=r"no torch.optim.Muon .*or use --model.optimizer adamw"):
        build_optimizer(_model(), "muon", lr=1e-3, weight_decay=0.1)
    with pytest.raises(TinyLLMError, match=r"no torch.optim.Muon .*or leave modern\+muon out of --variants"):
        swaps(variants=["modern", "modern+muon"])
