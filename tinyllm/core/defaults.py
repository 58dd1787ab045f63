"""The defaults that several parts of tinyllm share, each defined once.

The training samples, ``generate``, ``export`` and the model card all sample
with the same settings unless told otherwise (the card and ``generate`` at
lengths of their own), and every
seeded thing starts from the same seed, so a sample on a card can be
reproduced with ``generate``.
"""

SEED = 1337  # nanoGPT's: training, the data windows and the samples start here
PROMPT = "ROMEO:"  # a speaker's name, as every speech of Tiny Shakespeare begins
TEMPERATURE = 0.8  # nanoGPT's sample.py: a little sharper than the model's own distribution
TOP_K = 200  # ... among the 200 most likely tokens only (all of them, for a character vocabulary)
SAMPLE_TOKENS = 200  # a sample's length: the training samples' and an export's (about three lines of a play)
VAL_FRACTION = 0.1  # the trailing part of a text held out for validation; a measurement after training must match
LOOK_PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?"  # what attention pictures look at
