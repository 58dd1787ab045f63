"""``python -m tinyllm COMMAND``: one module per command; the registry is ``tinyllm.__main__``."""
