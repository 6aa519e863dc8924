"""Inference from a saved run: classification now, generation for the causal-LM recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from hf_recipes.errors import RecipeError


def check_model_dir(model_dir: str | Path) -> Path:
    path = Path(model_dir)
    if not path.is_dir():
        raise RecipeError(f"model_dir not found: {path}")
    if not any(path.glob("*.safetensors")):
        raise RecipeError(f"model_dir {path} holds no safetensors weights (is it a finished run's output_dir?)")
    return path


def device() -> int | str:
    return 0 if torch.cuda.is_available() else "cpu"


def classify(model_dir: str | Path, texts: Sequence[str], batch_size: int = 32) -> list[dict]:
    """``[{"text", "label", "score"}]`` for each text, the score being the predicted label's probability."""
    path = check_model_dir(model_dir)
    texts = list(texts)
    if not texts:
        raise RecipeError("no texts to classify")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
    classifier = pipeline("text-classification", model=model, tokenizer=tokenizer, device=device())
    results = classifier(texts, batch_size=batch_size, truncation=True)
    return [{"text": t, "label": r["label"], "score": float(r["score"])} for t, r in zip(texts, results)]
