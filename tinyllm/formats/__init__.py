"""Files other software reads: safetensors folders in the Hugging Face layout, tokenizer files, model cards."""
