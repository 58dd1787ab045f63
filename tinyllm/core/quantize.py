"""Weight-only int8 quantization: the memory-bound half of fast CPU decoding.

Decoding one token multiplies a single activation row by every weight matrix,
so each step reads all the weights once and does only 2 FLOPs per weight read:
the speed limit is memory bandwidth, not arithmetic. The 10.6M-parameter
modern model holds 42 MB of fp32 weights; at the ~12 GB/s that a 2-core AMD
EPYC without bf16 streamed (DEVLOG.md), that alone caps decoding near 300
tokens/s. In int8 the same weights are 10.6 MB, a quarter of the bytes, and fit
in its 32 MB last-level cache.

Plain PyTorch, inference only: the model is trained in floating point and
quantized after loading (``tinyllm generate --quantize int8``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinyllm.compat import int8_weight_matmul


class Int8Linear(nn.Module):
    """A linear layer whose weight is stored as int8 with one scale per output row.

        s_o   = max_i |W_oi| / 127                       (absmax, per output channel)
        Wq_oi = round(W_oi / s_o)  ∈ [-127, 127]
        y     = (x · Wqᵀ) ⊙ s + b

    Symmetric absmax quantization as in LLM.int8() (Dettmers et al., 2022,
    arXiv:2208.07339), applied to the weights only, like llama.cpp's Q8_0. s_o
    is rounded to a bfloat16 value first (at most 2⁻⁹ relative, so the largest
    weight lands within one step of ±127, clamped), and then every weight is
    within s_o / 2 of its int8 value times s_o.

    On the CPU, for a few rows (decoding), the product runs in torch's
    int8-weight kernel, whose fast path takes bfloat16 activations: x is
    rounded to bfloat16 on the way in and the result returned in x's dtype. Its
    cost grows with every row, so a prompt (prefill) is multiplied by the
    dequantized weight instead, in x's dtype.
    """

    # The int8 kernel still wins at 16 rows and loses at 32 (measured on that EPYC, DEVLOG.md): use it up to 16.
    INT8_KERNEL_MAX_ROWS = 16

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        # One bfloat16 scale per row, the int8 kernel's own dtype: both kernels below use the very same weights.
        scale = (w.abs().amax(dim=1).clamp(min=torch.finfo(torch.bfloat16).tiny) / 127).to(torch.bfloat16)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.shared: tuple[Tensor, Tensor, int, int] | None = None  # see share_products

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and x.numel() <= self.INT8_KERNEL_MAX_ROWS * self.in_features:
            rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
            if self.shared is not None and torch.compiler.is_compiling():
                weight, scale, start, stop = self.shared  # one product for the group, its columns start:stop
                y = int8_weight_matmul(rows, weight, scale)[:, start:stop]
            else:
                y = int8_weight_matmul(rows, self.weight, self.scale)
            y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)  # reshape: a group's columns are strided
        else:  # dequantize on the fly (the weights still take a quarter of the memory at rest)
            y = F.linear(x, self.weight.to(x.dtype)) * self.scale.to(x.dtype)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# Layers of one module that multiply the same input: compiled, each group is one product.
SAME_INPUT = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def share_products(model: nn.Module) -> None:
    """Group the int8 layers of every module of ``model`` that multiply the same input (:data:`SAME_INPUT`),
    for a step about to be compiled; again after the model was moved or cast."""
    for module in model.modules():
        for names in SAME_INPUT:
            _stack(module, names)


def _stack(module: nn.Module, names: tuple[str, ...]) -> None:
    """Store the int8 layers ``names`` of ``module`` as row blocks of one weight, and let a compiled step use it.

    Each layer keeps its own weight as a view of the stacked one (no extra memory) and runs alone in eager
    mode. Compiled, each multiplies the input by the whole stack and keeps its own columns; the compiler
    finds the identical products and computes one: one kernel call for q, k and v, where each call cost
    several microseconds beyond its arithmetic (DEVLOG.md). torch's int8 kernel computes each output
    column from its own weight row, so the columns equal the layer's own product bit for bit (tested).
    """
    layers = [getattr(module, name, None) for name in names]
    if not all(isinstance(layer, Int8Linear) for layer in layers):
        return
    first = layers[0]
    if any(layer.in_features != first.in_features or layer.weight.device != first.weight.device for layer in layers):
        return  # not one input after all
    weight = torch.cat([layer.weight for layer in layers])
    scale = torch.cat([layer.scale for layer in layers])
    start = 0
    for layer in layers:
        stop = start + layer.out_features
        layer.weight, layer.scale = weight[start:stop], scale[start:stop]
        layer.shared = (weight, scale, start, stop)
        start = stop


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by an :class:`Int8Linear`, in place; returns the model, in eval mode.

    Inference only. Embeddings and norms stay in floating point (a lookup reads
    one row, not the whole table). A head tied to the embedding gets its own
    int8 copy. Made for the CPU: elsewhere every product dequantizes first.
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child).to(child.weight.device))
    return model.eval()
