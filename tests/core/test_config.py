"""Tests for tinyllm.core.config: validation, the recipes' architectures, serialization."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.models import PRESET_NAMES, recipe_arch
from tinyllm.core.config import GPTConfig
from tinyllm.errors import ConfigError, TinyLLMError


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(n_embd=30, n_head=4), r"n_embd=30 is not divisible by n_head=4"),
        (dict(norm="batchnorm"), r"norm='batchnorm' is not one of layernorm, rmsnorm"),
        (dict(mlp="tanh"), r"mlp='tanh' is not one of relu, gelu, relu2, swiglu"),
        (dict(pos_emb="alibi"), r"pos_emb='alibi' is not one of learned, rope"),
        (dict(attention="flash"), r"attention='flash' is not one of manual, sdpa"),
        (dict(n_embd=30, n_head=2, pos_emb="rope"), r"RoPE needs an even head dimension.*15"),
        (dict(dropout=1.0), r"dropout"),
        (dict(n_layer=0), r"n_layer must be at least 1"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        GPTConfig(**kwargs)


def test_config_error_is_tinyllm_and_value_error():
    with pytest.raises(TinyLLMError):
        GPTConfig(norm="nope")
    with pytest.raises(ValueError):
        GPTConfig(norm="nope")


def test_odd_head_dim_ok_without_rope():
    cfg = GPTConfig(n_embd=30, n_head=2, pos_emb="learned")
    assert cfg.head_dim == 15


def test_vanilla_and_modern_recipes_differ_in_the_swapped_switches_and_dropout_only():
    vanilla, modern = recipe_arch("vanilla").to_dict(), recipe_arch("modern").to_dict()
    assert {k for k in vanilla if vanilla[k] != modern[k]} == {"norm", "mlp", "pos_emb", "bias", "dropout"}
    assert recipe_arch("vanilla", norm="rmsnorm") == recipe_arch("vanilla+rmsnorm")
    with pytest.raises(ConfigError, match="mlp"):
        recipe_arch("vanilla", mlp="nope")


def test_from_dict_unknown_keys():
    d = GPTConfig().to_dict()
    d["n_embed"] = 128
    d["flash"] = True
    with pytest.raises(ConfigError, match=r"unknown model config keys \['flash', 'n_embed'\]"):
        GPTConfig.from_dict(d)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_config_round_trip_and_torch_save(preset, tmp_path):
    cfg = recipe_arch(preset, mlp_hidden=96 if preset == "modern" else None)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "ckpt.pt"
    torch.save({"cfg": cfg.to_dict()}, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["cfg"] == cfg.to_dict()
    assert GPTConfig.from_dict(loaded["cfg"]) == cfg
