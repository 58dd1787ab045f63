"""Optimizers: AdamW everywhere, or Muon for the hidden weight matrices with AdamW for the rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from tinyllm.errors import TinyLLMError

OptimizerName = Literal["adamw", "muon"]
BETAS = (0.9, 0.95)  # AdamW's, as GPT-3 and LLaMA train: a shorter second-moment memory than 0.999
MUON_LR = 0.02  # Muon's rate for the hidden matrices, on its own scale: its updates are orthogonalized


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The model's parameters by the update they need.

    * ``hidden``: the weight matrices inside the blocks (q/k/v/o, gate/up/down projections).
      Muon orthogonalises their updates; it is defined for matrices that map one hidden
      space to another, not for lookup tables.
    * ``embedding``: token/position embeddings (tables indexed by token or position) and the
      output head (one row per token): Muon's equal-rate update does not suit them.
    * ``no_decay``: norm gains and biases (1-D); weight decay would pull a gain towards 0
      and shrink the very signal it exists to scale.
    """
    groups: dict[str, list[nn.Parameter]] = {"hidden": [], "embedding": [], "no_decay": []}
    for name, p in model.named_parameters():
        if p.dim() < 2:
            groups["no_decay"].append(p)
        elif name.startswith("layers."):
            groups["hidden"].append(p)
        else:
            groups["embedding"].append(p)
    return groups


def check_muon(otherwise: str) -> None:
    """Refuse Muon on a torch without ``torch.optim.Muon``; ``otherwise`` says how to do without it."""
    if not hasattr(torch.optim, "Muon"):
        raise TinyLLMError(f"torch {torch.__version__} has no torch.optim.Muon (it came in torch 2.9): upgrade torch, "
                           f"or {otherwise}")  # fmt: skip


def build_optimizer(
    model: nn.Module,
    name: OptimizerName,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = BETAS,
    muon_lr: float = MUON_LR,
) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter, 2019), or Muon (Jordan et al., 2024) + AdamW.

    Groups are named, so the learning-rate monitor and the tests can tell them apart.
    """
    if name not in ("adamw", "muon"):
        raise TinyLLMError(f"unknown optimizer {name!r}: use adamw or muon")
    if name == "muon":
        check_muon("use --model.optimizer adamw")
    groups = parameter_groups(model)
    decayed = {"weight_decay": weight_decay}
    if name == "adamw":
        return torch.optim.AdamW(
            [
                {"params": groups["hidden"] + groups["embedding"], **decayed, "name": "decay"},
                {"params": groups["no_decay"], "weight_decay": 0.0, "name": "no_decay"},
            ],
            lr=lr,
            betas=betas,
        )
    return MuonWithAdamW(
        muon=torch.optim.Muon([{"params": groups["hidden"], "name": "muon"}], lr=muon_lr, weight_decay=weight_decay),
        adamw=torch.optim.AdamW(
            [
                {"params": groups["embedding"], **decayed, "name": "embedding"},
                {"params": groups["no_decay"], "weight_decay": 0.0, "name": "no_decay"},
            ],
            lr=lr,
            betas=betas,
        ),
    )


class MuonWithAdamW(torch.optim.Optimizer):
    """Two optimizers stepped as one, so Lightning's automatic optimization,
    gradient clipping, precision and LR schedulers treat them as one.

    Muon: for each hidden matrix W with gradient momentum M, the update is the
    nearest semi-orthogonal matrix to M (five Newton–Schulz iterations
    approximate U Vᵀ of M = U Σ Vᵀ), so every direction of W moves at the same
    rate however skewed the gradient's spectrum. The embeddings, head and
    gains keep AdamW. ``param_groups`` *are* the inner optimizers' group
    dicts: a scheduler that scales a group's ``lr`` here scales it there.
    """

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW) -> None:
        self.muon, self.adamw = muon, adamw
        super().__init__([p for opt in (muon, adamw) for g in opt.param_groups for p in g["params"]], {})
        self.param_groups = muon.param_groups + adamw.param_groups

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:  # Lightning passes the forward/backward as a closure: run it once, for both
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != {"muon", "adamw"}:
            raise TinyLLMError("the checkpoint's optimizer state is not Muon + AdamW: resume with the optimizer "
                               "it was trained with (--model.optimizer)")  # fmt: skip
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.muon.param_groups + self.adamw.param_groups  # loading made new group dicts
