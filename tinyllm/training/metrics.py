"""The names of what a run logs, defined once: TensorBoard tags, checkpoint monitors and the readers use these."""

import math

TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"  # mean cross-entropy per predicted token, in nats: what "best" and early stopping watch
VAL_PPL = "val_ppl"  # e^val_loss
VAL_BPB = "val_bpb"  # bits per UTF-8 byte of the validation text: comparable across tokenizers
EVALUATION_METRICS = (VAL_LOSS, VAL_PPL, VAL_BPB)  # what an evaluation logs (val_bpb: when bytes are known)
THROUGHPUT_PREFIX = "train/"  # Lightning's Throughput meter's figures, under this prefix
TOKENS_PER_S = THROUGHPUT_PREFIX + "device/items_per_sec"  # the meter counts tokens as its "items"


def bpb_in_nats(val_bpb: float) -> float:
    """Bits per byte as nats per byte (× ln 2): the scale of results/ tables; on ASCII text, nats per character."""
    return val_bpb * math.log(2)
