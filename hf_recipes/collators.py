"""Batch collators shared by the recipes."""

from __future__ import annotations

import torch
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only: GPT-2's absolute position embeddings then see the same
    positions for a sequence whether it is left-padded, right-padded or alone."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class PaddingCollator(DataCollatorWithPadding):
    """Pads each batch to its own longest sequence and adds matching position ids."""

    def __call__(self, features):
        batch = super().__call__(features)
        batch["position_ids"] = position_ids_from_mask(batch["attention_mask"])
        return batch


class LabelPaddingCollator(DataCollatorForSeq2Seq):
    """Pads input ids and labels to the batch's longest sequence. Label padding is -100 by position, so a real
    EOS (the same id as the pad token for GPT-2) stays a target; position ids count real tokens only."""

    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, label_pad_token_id=-100, **kwargs)

    def __call__(self, features, return_tensors=None):
        batch = super().__call__(features, return_tensors)
        batch["position_ids"] = position_ids_from_mask(batch["attention_mask"])
        return batch
