"""An LLM judge: an OpenAI-compatible chat endpoint scores generated answers against references, 0 to 100."""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from typing import Sequence

logger = logging.getLogger("hf_recipes")

JUDGE_PROMPT = (
    "Given the input `{prompt}` and correct output `{reference}`, score the model response `{generated}` on a "
    "scale from 0 to 100, where 100 is the best score. Respond with the integer number only."
)


def judge_scores(prompts: Sequence[str], references: Sequence[str], generated: Sequence[str],
                 task) -> tuple[float | None, str]:
    """Mean 0-100 score from an OpenAI-compatible chat endpoint, and a line for the report. The score is None
    when no judge is configured or it fails: a missing judge never fails a run, the line says why."""
    if not task.judge_url:
        return None, ("LLM judge: off (set judge_url to an OpenAI-compatible endpoint, e.g. a local Ollama, "
                      "to score answers).")
    where = f"LLM judge ({task.judge_model} at {task.judge_url})"
    url = task.judge_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json"}
    if os.environ.get(task.judge_api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[task.judge_api_key_env]}"
    scores = []
    try:
        for prompt, reference, answer in zip(prompts, references, generated):
            body = {"model": task.judge_model, "temperature": 0, "messages": [
                {"role": "user", "content": JUDGE_PROMPT.format(prompt=prompt, reference=reference, generated=answer)}]}
            request = urllib.request.Request(url, json.dumps(body).encode(), headers)
            with urllib.request.urlopen(request, timeout=60) as response:
                reply = json.load(response)["choices"][0]["message"]["content"]
            number = re.search(r"\d+", reply)
            if number:
                scores.append(min(100, int(number.group())))
    except (urllib.error.URLError, OSError, KeyError, IndexError, TypeError, ValueError) as err:
        logger.warning("%s failed (%s: %s); no judge score", where, type(err).__name__, err)
        return None, f"{where}: no score ({type(err).__name__}: {err})."
    if not scores:
        return None, f"{where}: no score (no reply held a number)."
    mean = sum(scores) / len(scores)
    return mean, f"{where}: mean score {mean:.1f} / 100 over {len(scores)} of {len(prompts)} answers."
