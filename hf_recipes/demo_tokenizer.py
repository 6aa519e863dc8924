"""A small byte-level BPE tokenizer in GPT-2's style, trained locally for the offline demo and the tests.

``python -m hf_recipes.demo_tokenizer`` rebuilds ``hf_recipes/samples/tokenizer`` from the bundled samples.
"""

from __future__ import annotations

import csv
import json
from importlib.resources import files
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2TokenizerFast

EOS = "<|endoftext|>"
SAMPLES = files("hf_recipes") / "samples"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, model_max_length: int = 1024) -> GPT2TokenizerFast:
    """Byte-level BPE like GPT-2's (any UTF-8 text encodes; EOS = BOS = UNK = ``<|endoftext|>``, id 0)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return GPT2TokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS, model_max_length=model_max_length
    )


def sample_texts() -> list[str]:
    texts = []
    with open(SAMPLES / "sentiment" / "train.csv", encoding="utf-8", newline="") as handle:
        texts += [row["text"] for row in csv.DictReader(handle)]
    texts += (SAMPLES / "lyrics" / "songs.txt").read_text(encoding="utf-8").split("\n\n")
    for record in json.loads((SAMPLES / "instructions" / "instructions.json").read_text(encoding="utf-8")):
        texts.append("\n".join(record.values()))
    return texts


if __name__ == "__main__":
    out = SAMPLES / "tokenizer"
    train_tokenizer(sample_texts()).save_pretrained(out)
    print(f"wrote {out}")
