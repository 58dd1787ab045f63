"""One serializable config for every model tinyllm can build.

Every architectural choice is a field; the defaults are the modern
(LLaMA/Qwen-style) model. Recipes live in the YAML files of ``configs/``:
``vanilla.yaml`` (GPT-2 era) and ``modern.yaml`` set these fields, and the
swap experiment changes one at a time. The config holds plain types only, so
``dataclasses.asdict(config)`` goes into a checkpoint that loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from tinyllm.errors import ConfigError

Norm = Literal["layernorm", "rmsnorm"]
MLPKind = Literal["relu", "gelu", "relu2", "swiglu"]
PosEmb = Literal["learned", "rope"]
AttnKernel = Literal["manual", "sdpa"]

_CHOICES = {  # the Literal types' values, for the messages that refuse anything else
    "norm": get_args(Norm),
    "mlp": get_args(MLPKind),
    "pos_emb": get_args(PosEmb),
    "attention": get_args(AttnKernel),
}


@dataclass(frozen=True)
class GPTConfig:
    """Architecture of a decoder-only transformer.

    Attributes:
        vocab_size: number of token ids (65 for Tiny Shakespeare characters,
            50257 for GPT-2 BPE). Normally filled in from the data.
        block_size: the longest context the model sees (positions 0..block_size-1).
        n_layer: depth, the number of transformer blocks.
        n_head: attention heads per block; each sees n_embd / n_head channels.
        n_embd: the residual stream's width.
        mlp_hidden: hidden width of the MLP; ``None`` derives it: 4·n_embd for
            relu/gelu, and for swiglu 2/3·4·n_embd rounded up to a multiple of
            64 (same parameter count as the 4× MLP with 3 matrices, LLaMA §2).
        norm: ``layernorm`` (GPT-2) or ``rmsnorm`` (LLaMA).
        mlp: ``relu`` (the original), ``gelu`` (GPT-2), ``swiglu`` (LLaMA) or
            ``relu2``, ReLU squared (Primer; the modded-nanogpt speedruns).
        pos_emb: ``learned`` absolute positions (GPT-2) or ``rope`` (LLaMA).
        attention: ``manual`` (our masked-softmax code, for reading) or
            ``sdpa`` (torch's fused scaled_dot_product_attention, for speed;
            in bf16 on a CPU it runs the formula, which is faster there).
            Both compute the same function.
        dropout: dropout on embeddings, attention weights and residual branches.
        bias: biases in every Linear and LayerNorm (GPT-2) or none (LLaMA).
        tie_embeddings: the output head reuses the token embedding matrix.
        rope_theta: RoPE base θ; frequencies are θ^(-2i/head_dim).
        norm_eps: ε inside LayerNorm/RMSNorm.
        qk_norm: (2025) RMSNorm on each head's queries and keys before the scores.
        zero_init_proj: (2025) o_proj and down_proj start at zero, so every block starts as the identity.
        value_embeds: (2025) each layer adds a token-indexed table of its own to the attention values.
        residual_scalars: (2025) each layer's input is λ·x + μ·x0, with learnable λ (from 1) and μ
            (from 0), x0 being the embedded tokens.
        logit_softcap: (2025) ``None``, or c in logits = c·tanh(logits / c).

    The 2025 switches come from the modded-nanogpt speedruns and nanochat and are all off by default;
    untied embeddings, the seventh, is ``tie_embeddings: false``.
    """

    vocab_size: int = 65
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    mlp_hidden: int | None = None
    norm: Norm = "rmsnorm"
    mlp: MLPKind = "swiglu"
    pos_emb: PosEmb = "rope"
    attention: AttnKernel = "sdpa"
    dropout: float = 0.0
    bias: bool = False
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    qk_norm: bool = False
    zero_init_proj: bool = False
    value_embeds: bool = False
    residual_scalars: bool = False
    logit_softcap: float | None = None

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                "pick n_embd as a multiple of n_head"
            )
        if self.pos_emb == "rope" and self.head_dim % 2:
            raise ConfigError(f"RoPE needs an even head dimension, got n_embd/n_head={self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.mlp_hidden is not None and self.mlp_hidden < 1:
            raise ConfigError(f"mlp_hidden must be at least 1 (or null to derive it), got {self.mlp_hidden}")
        if self.norm_eps <= 0 or self.rope_theta <= 0:
            raise ConfigError("norm_eps and rope_theta must be positive")
        if self.logit_softcap is not None and self.logit_softcap <= 0:
            raise ConfigError(f"logit_softcap must be positive (or null for none), got {self.logit_softcap}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def hidden_dim(self) -> int:
        """The MLP's hidden width (``mlp_hidden`` or the rule described above)."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp == "swiglu":
            return 64 * math.ceil(2 * 4 * self.n_embd / 3 / 64)
        return 4 * self.n_embd

    def llama_differences(self) -> list[str]:
        """What keeps this model from being a LLaMA, in words (empty for a LLaMA-shaped model)."""
        why = []
        if self.norm != "rmsnorm":
            why.append(f"{self.norm} instead of RMSNorm")
        if self.mlp != "swiglu":
            why.append(f"a {self.mlp} MLP instead of SwiGLU")
        if self.pos_emb != "rope":
            why.append(f"{self.pos_emb} positions instead of RoPE")
        if self.bias:
            why.append("biases")
        return why + self.extra_switches(computed_only=True)

    def extra_switches(self, computed_only: bool = False) -> list[str]:
        """The 2025 switches this model uses that no other field names (ReLU² is an ``mlp``, an untied head
        ``tie_embeddings``), in words; with ``computed_only``, those that change the function it computes (a
        zero start changes only where training begins)."""
        cap = self.logit_softcap
        used = ((self.qk_norm, True, "QK-norm"), (self.zero_init_proj, False, "zero-initialised output projections"),
                (self.value_embeds, True, "value embeddings"), (self.residual_scalars, True, "residual/x0 scalars"),
                (cap is not None, True, f"logits soft-capped at {cap:g}" if cap is not None else ""))  # fmt: skip
        return [words for on, computed, words in used if on and (computed or not computed_only)]

    @property
    def is_llama_shaped(self) -> bool:
        """True when a Hugging Face ``LlamaForCausalLM`` computes the same function."""
        return not self.llama_differences()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)
