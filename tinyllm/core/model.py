"""A decoder-only transformer, written out by hand, top to bottom.

Every component the GPT-2 → LLaMA story swaps is its own small class here:

    norms        LayerNorm (GPT-2)            → RMSNorm (LLaMA)
    MLPs         ReLU / GELU MLP (GPT-2)      → SwiGLU (LLaMA)
    positions    learned embeddings (GPT-2)   → rotary embeddings, RoPE (LLaMA)
    generation   recompute every step         → KV cache (prefill + decode)

and then the next era's switches, from the 2024-25 speedruns (modded-nanogpt,
nanochat), each off by default and each measured by ``experiment swaps``:

    MLPs         SwiGLU                       → ReLU² (``mlp: relu2``)
    attention    raw q·k                      → QK-norm (``qk_norm``)
    head         tied to the embedding        → untied (``tie_embeddings: false``)
    init         small output projections     → zero (``zero_init_proj``)
    values       v = x W_v                    → v + a token table (``value_embeds``)
    residual     x                            → λ·x + μ·x0 (``residual_scalars``)
    logits       z                            → c·tanh(z / c) (``logit_softcap``)

The model is plain PyTorch: it knows nothing of Lightning, tokenizers or files.
Faster paths for particular devices (dropout masks on a CPU, torch's fused
attention) live beside it in ``kernels.py`` and compute the same functions.
Names follow the Hugging Face LLaMA layout (``q_proj``, ``gate_proj`` …) so
that export is a renaming, not surgery. The norms are the exception: LLaMA
calls them ``input_layernorm`` and ``post_attention_layernorm`` whatever
their kind; here they are ``input_norm`` and ``post_attention_norm``, since
they may be RMSNorms, and export renames them.

Shapes: B batch, T new tokens, S tokens attended to (cached + new),
C = n_embd, H = n_head, D = head_dim = C / H.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinyllm.core.config import GPTConfig
from tinyllm.core.kernels import dropout, embedding, fused_attention, fused_attention_is_slow, warm_up_threads
from tinyllm.errors import TinyLLMError

# ----------------------------------------------------------------------------- dropout


class Dropout(nn.Module):
    """Dropout (Srivastava et al., 2014, JMLR 15): in training, zero each element with probability p.

        y = x · keep / (1 - p),  keep ~ Bernoulli(1 - p)

    (On a CPU p is rounded to a multiple of 1/256: ``kernels.dropout``.)
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)  # the mask is drawn the fastest way for the device

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ----------------------------------------------------------------------------- embedding


class Embedding(nn.Embedding):
    """A table of learned vectors, one per id: y = W[idx] (``nn.Embedding``, without its options)."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__(num_embeddings, embedding_dim)

    def forward(self, idx: Tensor) -> Tensor:
        return embedding(idx, self.weight)  # the same lookup, with a gradient summed in a fixed order when compiled


# ----------------------------------------------------------------------------- norms


class LayerNorm(nn.Module):
    """Layer normalization (Ba, Kiros & Hinton, 2016, arXiv:1607.06450).

        y = (x - mean(x)) / sqrt(var(x) + eps) · weight + bias

    mean and (biased) variance are taken over the last dimension. ``bias=False``
    drops the additive term, as nanoGPT allows.
    """

    def __init__(self, dim: int, eps: float, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y


class RMSNorm(nn.Module):
    """Root-mean-square normalization (Zhang & Sennrich, 2019, arXiv:1910.07467).

        y = x / sqrt(mean(x²) + eps) · weight

    No centering and no bias: cheaper than LayerNorm and, in LLaMA-style models,
    just as good. Computed in float32 (like LLaMA) so half precision cannot
    overflow the sum of squares, and returned in x's dtype: bf16 queries and
    keys (QK-norm) stay bf16, as the attention kernels expect.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (self.weight * y).to(x.dtype)


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, config.norm_eps)
    return LayerNorm(config.n_embd, config.norm_eps, bias=config.bias)


# ----------------------------------------------------------------------------- positions


class RotaryEmbedding(nn.Module):
    """Rotary position embedding, RoPE (Su et al., 2021, arXiv:2104.09864).

    Each pair of query/key channels (x_i, x_{i+D/2}) is rotated by the angle
    p·θ_i, where p is the token's absolute position and θ_i = base^(-2i/D):

        x'_i       = x_i · cos(pθ_i) - x_{i+D/2} · sin(pθ_i)
        x'_{i+D/2} = x_{i+D/2} · cos(pθ_i) + x_i · sin(pθ_i)

    Rotations compose, so q'·k' depends only on the distance p_q - p_k: the
    model sees relative positions without any learned position parameters.

    Pairs are (i, i + D/2) ("split halves", as in GPT-NeoX and Hugging Face's
    LLaMA), not adjacent channels (2i, 2i+1) as in Meta's original code. The two
    are the same model up to a permutation of the q/k projection rows; choosing
    Hugging Face's layout makes our weights load there unchanged.
    """

    def __init__(self, head_dim: int, max_positions: int, base: float) -> None:
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (D/2,): θ_i
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)  # (P, D/2): pθ_i
        # Not persistent: derived from the config, so kept out of checkpoints.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def angles(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos and sin (T, D/2) for the absolute ``positions`` (T,); computed once per forward, used by every layer."""
        return self.cos[positions], self.sin[positions]

    @staticmethod
    def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate ``x`` (B, H, T, D) by the angles behind ``cos``/``sin`` (T, D/2), in x's dtype: the formula above."""
        # Under bf16 autocast x is bf16: fp32 tables would promote q and k to fp32, and the matmuls cast them back.
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)  # x_i and x_{i+D/2}
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


# ----------------------------------------------------------------------------- attention


class KVCache:
    """Keys and values of every token seen so far, one preallocated buffer per layer.

    Generation runs in two phases (Pope et al., 2022, arXiv:2211.05102):
    *prefill* pushes the whole prompt through the model at once (causally
    masked) and stores its keys/values; each *decode* step then feeds one new
    token, which attends to the stored keys/values instead of recomputing them.
    The buffers are sized for ``block_size`` tokens and never grow: the model
    refuses to write past them (``tinyllm.core.generate`` shifts its window first).

    ``length`` is the number of tokens stored, which is also the absolute
    position of the next token: RoPE and learned positions both use it.
    """

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch_size, config.n_head, config.block_size, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new (B, H, T, D) keys/values at ``length`` and return all S = length + T of them."""
        end = self.length + k.size(2)
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def reset(self) -> None:
        self.length = 0


def causal_mask(n: int) -> Tensor:
    """(n, n) additive mask M: 0 where the query at position i may see the key at j (j <= i), -inf where j > i."""
    return torch.full((n, n), float("-inf")).triu(diagonal=1)


class AttentionScores(nn.Module):
    """softmax(Q Kᵀ / sqrt(D) + M), (B, H, T, S): row i is how much query i attends to each key.

    A module of its own (with no parameters) so that inspection can watch its
    output with a forward hook (``tinyllm.core.insides``).
    """

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(head_dim)

    def forward(self, q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
        """``mask`` is M's (T, S) rows and columns for these queries and keys (``GPT.forward`` cuts them)."""
        # Scaling q (T×D) rather than the scores (T×S) is the same product with fewer multiplies.
        att = (q * self.scale) @ k.transpose(-2, -1)
        # M is added, as the formula reads (a finite x + 0 = x, x - inf = -inf); a compiled CPU step
        # reads a float mask several times faster than a boolean one (kernels.py). In the scores' dtype:
        # torch adds a float32 mask to bf16 scores about 4× slower than a bf16 one.
        att += mask.to(att.dtype)  # in place: att is ours alone
        return F.softmax(att, dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (Vaswani et al., 2017, arXiv:1706.03762).

        Attention(Q, K, V) = softmax(Q Kᵀ / sqrt(D) + M) V,  M_ij = -inf where j > i

    All H heads run in one batched matmul over a (B, H, T, D) tensor. The
    ``manual`` kernel writes the formula out; ``sdpa`` calls torch's fused
    ``scaled_dot_product_attention`` (flash / memory-efficient kernels), which
    computes the same thing faster and without materialising the T×S matrix
    (except on a CPU in bf16 or in training with dropout, where the formula is
    faster: ``kernels.py``).
    """

    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        c, self.n_head, self.head_dim = config.n_embd, config.n_head, config.head_dim
        self.layer_idx = layer_idx
        self.kernel = config.attention
        self.dropout = config.dropout
        self.q_proj = nn.Linear(c, c, bias=config.bias)
        self.k_proj = nn.Linear(c, c, bias=config.bias)
        self.v_proj = nn.Linear(c, c, bias=config.bias)
        self.o_proj = nn.Linear(c, c, bias=config.bias)
        # QK-norm (Henry et al., 2020, arXiv:2010.04245; Dehghani et al., 2023, arXiv:2302.05442):
        # normalising each head's q and k bounds the scores q·k/sqrt(D), so no logit can blow up
        # the softmax; the gains (one per channel of a head, as in OLMo 2 and Qwen3) learn the scale back.
        self.q_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        self.scores = AttentionScores(self.head_dim)
        self.attn_dropout = Dropout(config.dropout)
        self.resid_dropout = Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        cache: KVCache | None = None,
        value_embed: Tensor | None = None,
    ) -> Tensor:
        """``mask`` is M (T, S) for the tokens' positions (:class:`AttentionScores`); ``rope`` the (cos, sin)
        pair of those positions, or None without RoPE; ``value_embed`` (B, T, C) is added to the values
        (``GPT.value_embeds``), or None."""
        b, t, c = x.shape
        v = self.v_proj(x) if value_embed is None else self.v_proj(x) + value_embed
        # (B, T, C) -> (B, H, T, D): every head is a slice of the channel dimension.
        q, k, v = (y.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
                   for y in (self.q_proj(x), self.k_proj(x), v))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = RotaryEmbedding.rotate(q, *rope), RotaryEmbedding.rotate(k, *rope)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        y = self._attend(q, k, v, mask)
        y = y.transpose(1, 2).reshape(b, t, c)  # re-assemble the heads side by side
        return self.resid_dropout(self.o_proj(y))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        dropout_p = self.dropout if self.training else 0.0
        if self.kernel == "sdpa" and not fused_attention_is_slow(q, dropout_p):
            return fused_attention(q, k, v, dropout_p, mask)
        return self.attn_dropout(self.scores(q, k, mask)) @ v  # (B, H, T, D)


# ----------------------------------------------------------------------------- MLPs


class ReLUSquared(nn.Module):
    """ReLU² (So et al., 2021, "Primer", arXiv:2109.08668): act(z) = max(z, 0)².

    Found by architecture search; as sparse as ReLU, but smooth at 0 and growing
    faster, it matches a gated MLP with two matrices instead of three. The
    modded-nanogpt speedruns and nanochat use it.
    """

    def forward(self, z: Tensor) -> Tensor:
        return F.relu(z).square()


class MLP(nn.Module):
    """The GPT feed-forward block (Vaswani et al., 2017; Radford et al., 2019).

        MLP(x) = down_proj(act(up_proj(x))),  act = ReLU, GELU or ReLU²

    GELU uses GPT-2's tanh approximation (Hendrycks & Gimpel, 2016, arXiv:1606.08415).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.n_embd, config.hidden_dim, bias=config.bias)
        self.down_proj = nn.Linear(config.hidden_dim, config.n_embd, bias=config.bias)
        acts = {"relu": nn.ReLU, "gelu": lambda: nn.GELU(approximate="tanh"), "relu2": ReLUSquared}
        self.act = acts[config.mlp]()
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.down_proj(self.act(self.up_proj(x))))


class SwiGLU(nn.Module):
    """Gated feed-forward block with a SiLU gate (Shazeer, 2020, arXiv:2002.05202).

        SwiGLU(x) = down_proj(SiLU(gate_proj(x)) ⊙ up_proj(x)),  SiLU(z) = z·σ(z)

    Three matrices instead of two, so the hidden width is 2/3 of the usual 4·C
    to keep the parameter count (LLaMA, Touvron et al., 2023, arXiv:2302.13971).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.hidden_dim, bias=config.bias)
        self.up_proj = nn.Linear(config.n_embd, config.hidden_dim, bias=config.bias)
        self.down_proj = nn.Linear(config.hidden_dim, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


# ----------------------------------------------------------------------------- the model


class Block(nn.Module):
    """One pre-norm transformer layer (Xiong et al., 2020, arXiv:2002.04745).

        h   = x + Attention(norm₁(x))
        out = h + MLP(norm₂(h))

    With ``residual_scalars`` the layer first mixes its input with the embedded
    tokens x0, x ← λ·x + μ·x0, with learnable scalars λ = 1 and μ = 0 at the start
    (the modded-nanogpt speedruns; a learnable residual gain as in ReZero,
    Bachlechner et al., 2020, arXiv:2003.04887): every layer can reach the tokens
    themselves, and rescale how much of the stream it keeps.
    """

    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        if config.residual_scalars:
            self.resid_scale = nn.Parameter(torch.ones(()))
            self.x0_scale = nn.Parameter(torch.zeros(()))
        self.input_norm = make_norm(config)
        self.self_attn = CausalSelfAttention(config, layer_idx)
        self.post_attention_norm = make_norm(config)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        rope: tuple[Tensor, Tensor] | None,
        cache: KVCache | None,
        x0: Tensor | None = None,
        value_embed: Tensor | None = None,
    ) -> Tensor:
        if x0 is not None:
            x = self.resid_scale * x + self.x0_scale * x0
        x = x + self.self_attn(self.input_norm(x), mask, rope, cache, value_embed)
        return x + self.mlp(self.post_attention_norm(x))


class GPT(nn.Module):
    """Token ids (B, T) → next-token logits (B, T, vocab_size).

    Embeddings (plus learned positions, or RoPE inside attention), a stack of
    pre-norm blocks, a final norm and a linear head, optionally tied to the
    token embedding (Press & Wolf, 2017, arXiv:1608.05859). GPT-2 ties them;
    the speedruns untie them (``tie_embeddings: false``): the head then learns
    which token comes next apart from the table that says what a token is.
    """

    init_std = 0.02  # GPT-2's weight scale (reset_parameters); Hugging Face calls it initializer_range

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        warm_up_threads()  # before RoPE's table: a CPU VM got the threads' first op wrong now and then (kernels.py)
        self.config = config
        self.embed_tokens = Embedding(config.vocab_size, config.n_embd)
        self.embed_positions = (
            Embedding(config.block_size, config.n_embd) if config.pos_emb == "learned" else None
        )
        self.rope = (
            RotaryEmbedding(config.head_dim, config.block_size, config.rope_theta)
            if config.pos_emb == "rope"
            else None
        )
        # M for every pair of positions, made once; each forward cuts out its queries' rows and keys' columns.
        # (Made in the forward, a compiled CPU step computed it from indices in every softmax: 1-5% slower.)
        # block_size² floats: 256 KB at 256, 4 MB at 1,024. Not persistent: derived from the config, so kept
        # out of checkpoints.
        self.register_buffer("mask", causal_mask(config.block_size), persistent=False)
        self.dropout = Dropout(config.dropout)
        # Value embeddings (the modded-nanogpt speedruns; nanochat): per layer a (vocab, C) table
        # added to the attention values, v = x W_v + E_l[token]. The values can then carry what a
        # token is straight from the input, whatever the stream has mixed in above it. Lookups
        # cost no FLOPs, but V·C parameters a layer: cheap for characters, not for a 50k BPE.
        self.value_embeds = (
            nn.ModuleList(Embedding(config.vocab_size, config.n_embd) for _ in range(config.n_layer))
            if config.value_embeds
            else None
        )
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation (Radford et al., 2019, §2.3).

        Weights ~ N(0, 0.02), biases 0, norm gains 1. The projections that write
        into the residual stream (o_proj, down_proj) get std 0.02/sqrt(2·n_layer),
        so the residual's variance does not grow with depth (two writes a layer).

        ``zero_init_proj`` starts them at 0 instead (Fixup, Zhang et al., 2019,
        arXiv:1901.09321; the modded-nanogpt speedruns): every block then begins
        as the identity and the model as a bigram table, and the gradient of a
        zero matrix, the outer product of its input and its output's gradient, is
        not zero, so they still learn from the first step.
        """
        residual_std = 0.0 if self.config.zero_init_proj else self.init_std / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(("o_proj", "down_proj")) else self.init_std
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=self.init_std)
            elif isinstance(module, (LayerNorm, RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Trainable parameters, counting a tied embedding/head matrix once."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6·N for the matmuls (forward 2N, backward 4N)
        plus 12·L·T·C for attention scores and their weighted sum (PaLM, Chowdhery
        et al., 2022, appendix B). Embedding lookups are not matmuls, so the
        position and value tables are left out of N, and so is the token table
        unless it is also the (tied) head."""
        c = self.config
        lookups = [self.embed_positions, *(self.value_embeds or [])]
        if not c.tie_embeddings:
            lookups.append(self.embed_tokens)
        n = self.num_parameters() - sum(t.weight.numel() for t in lookups if t is not None)
        return 6 * n + 12 * c.n_layer * c.block_size * c.n_embd

    def new_cache(self, batch_size: int, device: torch.device | None = None) -> KVCache:
        """An empty KV cache for ``batch_size`` sequences, on the model's device and dtype."""
        weight = self.embed_tokens.weight
        return KVCache(self.config, batch_size, device or weight.device, weight.dtype)

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """Logits for every position of ``idx`` (B, T).

        Without a cache the T tokens sit at positions 0..T-1. With one they
        continue after the ``cache.length`` tokens already stored, and their
        keys/values are appended to it.
        """
        t = idx.size(1)
        start = cache.length if cache is not None else 0
        if start + t > self.config.block_size:
            raise TinyLLMError(
                f"{start + t} tokens exceed the model's context of {self.config.block_size}; "
                "crop the input (tinyllm.core.generate does this for you)"
            )
        positions = torch.arange(start, start + t, device=idx.device)
        x = self.embed_tokens(idx)
        if self.embed_positions is not None:
            x = x + self.embed_positions(positions)
        x = self.dropout(x)
        x0 = x if self.config.residual_scalars else None
        rope = self.rope.angles(positions) if self.rope is not None else None
        # The new tokens' rows against every key so far: without a cache the usual lower triangle; with
        # one, the new queries see every cached key plus the new ones up to their own.
        mask = self.mask[start : start + t, : start + t]
        for i, layer in enumerate(self.layers):
            value_embed = self.value_embeds[i](idx) if self.value_embeds is not None else None
            x = layer(x, mask, rope, cache, x0, value_embed)
        if cache is not None:
            cache.advance(t)
        return self.head(x)

    def head(self, x: Tensor) -> Tensor:
        """Logits from the residual stream: lm_head(norm(x)), soft-capped when ``logit_softcap`` is set.

        Soft-capping (Gemma 2, arXiv:2408.00118; the modded-nanogpt speedruns),
        z ← c·tanh(z / c), keeps every logit inside (-c, c) smoothly: near 0 it
        changes nothing, and the model cannot buy a lower loss by making already
        confident logits ever larger.
        """
        logits = self.lm_head(self.norm(x))
        cap = self.config.logit_softcap
        return logits if cap is None else cap * torch.tanh(logits / cap)
