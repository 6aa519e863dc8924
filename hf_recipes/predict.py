"""Labels from a saved classifier run (``hf-recipes predict``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from hf_recipes.adapters import load_trained
from hf_recipes.errors import RecipeError
from hf_recipes.run_folder import CLASSIFIER, open_model_dir


def device() -> int | str:
    return 0 if torch.cuda.is_available() else "cpu"


def classify(model_dir: str | Path, texts: Sequence[str], batch_size: int = 32,
             trust_remote_code: bool = False) -> list[dict]:
    """``[{"text", "label", "score"}]`` for each text, the score being the predicted label's probability."""
    if batch_size is None or batch_size < 1:
        raise RecipeError(f"batch_size must be a positive number, got {batch_size}")
    path = open_model_dir(model_dir, CLASSIFIER, trust_remote_code)
    texts = list(texts)
    if not texts:
        raise RecipeError("no texts to classify")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = load_trained(path, AutoModelForSequenceClassification, trust_remote_code)
    classifier = pipeline("text-classification", model=model, tokenizer=tokenizer, device=device())
    results = classifier(texts, batch_size=batch_size, truncation=True)
    return [{"text": t, "label": r["label"], "score": float(r["score"])} for t, r in zip(texts, results)]
