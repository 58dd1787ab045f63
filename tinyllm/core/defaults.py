"""The defaults that several parts of tinyllm share, each defined once.

The training samples, ``generate``, ``export`` and the model card all sample
with the same settings unless told otherwise (the card and ``generate`` at
lengths of their own), and every
seeded thing starts from the same seed, so a sample on a card can be
reproduced with ``generate``.
"""

from tinyllm.errors import TinyLLMError

SEED = 1337  # nanoGPT's: training, the data windows and the samples start here
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seeds are unsigned 32-bit numbers
PROMPT = "ROMEO:"  # a speaker's name, as every speech of Tiny Shakespeare begins
TEMPERATURE = 0.8  # nanoGPT's sample.py: a little sharper than the model's own distribution
TOP_K = 200  # ... among the 200 most likely tokens only (all of them, for a character vocabulary)
SAMPLE_TOKENS = 200  # a sample's length: the training samples' and an export's (about three lines of a play)
VAL_FRACTION = 0.1  # the trailing part of a text held out for validation; a measurement after training must match
LOOK_PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?"  # what attention pictures look at


def check_seed(seed: int, option: str) -> None:
    """A seed every seeded part accepts, else one line that names the option (not numpy's error, mid-run)."""
    if not 0 <= seed <= MAX_SEED:
        raise TinyLLMError(f"{option} must be a seed from 0 to {MAX_SEED:,}, got {seed}")
