"""The model and what runs it: plain PyTorch, no Lightning (config, model, tokenizers, generation, checkpoints)."""
