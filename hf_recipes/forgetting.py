"""Catastrophic forgetting: perplexity on a plain-text file before and after fine-tuning.

For a causal LM the starting and the fine-tuned model are scored as they are. A classifier has no language-model
head of its own, so its fine-tuned backbone is read out through the starting model's LM head (when the starting
model has one): what the backbone forgot shows as a rise in that perplexity.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from hf_recipes.checks import Check, RunState
from hf_recipes.config import ModelArguments
from hf_recipes.data import check_local_file
from hf_recipes.errors import one_line
from hf_recipes.model import context_length, hub_kwargs, weights_dtype
from hf_recipes.report import format_change, markdown_table


@dataclass
class Perplexity:
    loss: float  # mean next-token loss over every predicted token
    perplexity: float
    tokens: int  # tokens scored
    truncated: bool  # the file held more than max_tokens


def read_text(path: str) -> str:
    check_local_file(path, "forgetting_eval_file")
    return Path(path).read_text(encoding="utf-8")


# Tokens past max_tokens that a prefix must hold before its first max_tokens are taken as the whole text's: only
# the words at the cut can tokenize differently from the whole text (a word split there, a whitespace run).
CUT_MARGIN_TOKENS = 64


def leading_tokens(tokenizer, text: str, count: int) -> tuple[list[int], bool]:
    """The first ``count`` token ids of ``text`` and whether it holds more, tokenizing a prefix of whole lines
    (doubled until it holds ``count`` + CUT_MARGIN_TOKENS tokens) instead of the whole text: a 1 GB file costs what
    its first lines do."""
    size = 8 * (count + CUT_MARGIN_TOKENS)  # characters; GPT-2 tokens average about 4
    while size < len(text):
        cut = text.find("\n", size)
        if cut < 0:
            break
        ids = tokenizer(text[:cut + 1], verbose=False)["input_ids"]
        if len(ids) > count + CUT_MARGIN_TOKENS:
            return ids[:count], True
        size *= 2
    ids = tokenizer(text, verbose=False)["input_ids"]
    return ids[:count], len(ids) > count


@torch.no_grad()
def text_perplexity(model: PreTrainedModel, tokenizer, text: str, max_tokens: int, batch_size: int = 4) -> Perplexity:
    """Perplexity of ``text`` cut into consecutive blocks of the model's context (no overlap), in fp32.

    Only the first ``max_tokens`` tokens are scored and only a prefix of the text is tokenized to find them, so a
    large file costs a bounded time and memory.
    """
    ids, truncated = leading_tokens(tokenizer, text, max_tokens)
    block = context_length(model.config)
    blocks = [ids[i:i + block] for i in range(0, len(ids), block)]
    blocks = [b for b in blocks if len(b) > 1]  # a single token predicts nothing
    if not blocks:
        return Perplexity(float("nan"), float("nan"), 0, truncated)
    was_training = model.training
    model.eval()
    total, counted = 0.0, 0
    try:
        # Blocks of one length share a batch (all but the last are full).
        for length in sorted({len(b) for b in blocks}):
            same = [b for b in blocks if len(b) == length]
            for start in range(0, len(same), batch_size):
                input_ids = torch.tensor(same[start:start + batch_size], device=model.device)
                loss = model(input_ids=input_ids, labels=input_ids).loss.float().item()
                predicted = input_ids.shape[0] * (length - 1)
                total += loss * predicted
                counted += predicted
    finally:
        model.train(was_training)
    mean = total / counted
    return Perplexity(mean, math.exp(mean) if mean < 700 else float("inf"), len(ids), truncated)


def starting_language_model(model_args: ModelArguments) -> tuple[PreTrainedModel | None, str]:
    """The starting model with its LM head, for reading a classifier's backbone; or None and the reason."""
    name = model_args.model_name_or_path
    if not name:
        return None, "the classifier was built from scratch, so there is no starting language-model head to read it"
    kwargs = {k: v for k, v in hub_kwargs(model_args).items() if v is not None}
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            name, output_loading_info=True, use_safetensors=True, dtype=weights_dtype(model_args), **kwargs)
    except (OSError, ValueError) as err:
        return None, f"the starting model '{name}' has no causal-LM form ({one_line(err)})"
    head = model.get_output_embeddings()
    missing = set(info.get("missing_keys", ()))
    if head is None or any(key.startswith("lm_head") for key in missing):
        return None, f"the starting model '{name}' has no language-model head"
    return model, ""


def backbone_with_head(classifier: PreTrainedModel, start_lm: PreTrainedModel) -> PreTrainedModel:
    """A copy of ``start_lm`` whose backbone is the fine-tuned classifier's and whose LM head stays the starting one.

    GPT-2 ties its LM head to the input embeddings, which fine-tuning changes; the head is untied first so it keeps
    the starting weights.
    """
    from hf_recipes.adapters import is_adapter

    if is_adapter(classifier):  # LoRA: the backbone as it computes, adapters merged in
        classifier = copy.deepcopy(classifier).merge_and_unload()
    lm = copy.deepcopy(start_lm)
    head = lm.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    lm.config.tie_word_embeddings = False
    backbone, lm_backbone = getattr(classifier, classifier.base_model_prefix), getattr(lm, lm.base_model_prefix)
    rows, embeddings = backbone.get_input_embeddings().num_embeddings, lm_backbone.get_input_embeddings()
    if rows != embeddings.num_embeddings:  # the classifier's own pad token; the head keeps the starting vocabulary
        lm_backbone.set_input_embeddings(torch.nn.Embedding(rows, embeddings.embedding_dim, embeddings.padding_idx))
    lm_backbone.load_state_dict(backbone.state_dict())
    return lm.to(classifier.device)


def cached_starting_language_model(run: RunState):
    """A classifier's starting model with its LM head (loaded once per run), or None and why there is none."""
    before = run.prepared.before
    if "start_lm" not in before:
        before["start_lm"] = starting_language_model(run.args.model)
    return before["start_lm"]


class ForgettingCheck(Check):
    """Perplexity on forgetting_eval_file before and after fine-tuning."""

    name = "forgetting check"
    every_process = True

    def applies(self, run: RunState) -> bool:
        return run.prepared.forgetting_text is not None

    def before_training(self, run: RunState) -> None:
        run.prepared.before["forgetting"] = self.perplexity(run, fine_tuned=False)

    def after_training(self, run: RunState) -> None:
        after = self.perplexity(run, fine_tuned=True)
        run.checks.add("Forgetting", self.section(run, run.prepared.before["forgetting"], after))

    @staticmethod
    def perplexity(run: RunState, fine_tuned: bool) -> Perplexity | str:
        """Perplexity of the starting or the fine-tuned model on the file, or why it does not apply."""
        prepared, trainer = run.prepared, run.trainer
        text, limit = prepared.forgetting_text, run.args.checks.forgetting_max_tokens
        if prepared.label_names is None:  # a language model: scored as it is
            return text_perplexity(trainer.model, prepared.tokenizer, text, limit)
        start_lm, reason = cached_starting_language_model(run)
        if start_lm is None:
            return reason
        if not fine_tuned:
            lm = start_lm.to(trainer.args.device)
            try:
                return text_perplexity(lm, prepared.tokenizer, text, limit)
            finally:
                start_lm.to("cpu")
        return text_perplexity(backbone_with_head(trainer.model, start_lm), prepared.tokenizer, text, limit)

    @staticmethod
    def section(run: RunState, before, after) -> str:
        found = run.found
        if isinstance(before, str) or isinstance(after, str):
            found["forgetting"] = {"applies": False, "reason": before if isinstance(before, str) else after}
            return f"Does not apply to this run: {found['forgetting']['reason']}."
        found["forgetting"] = {"applies": True, "tokens": before.tokens, "loss_before": before.loss,
                               "loss_after": after.loss, "perplexity_before": before.perplexity,
                               "perplexity_after": after.perplexity}
        how = ("the fine-tuned backbone read through the starting model's LM head"
               if run.prepared.label_names is not None else "the fine-tuned model")
        rows = [{"model": "starting model", "loss": before.loss, "perplexity": before.perplexity},
                {"model": how, "loss": after.loss, "perplexity": after.perplexity}]
        scored = f"the first {before.tokens:,} tokens" if before.truncated else f"all {before.tokens:,} tokens"
        change = format_change(before.perplexity, after.perplexity)
        return (f"Perplexity on `{run.args.checks.forgetting_eval_file}` ({scored}, blocks of the model context):"
                f"\n\n{markdown_table(rows)}\n\nChange: {change}. A large rise means fine-tuning overwrote what the "
                "model knew about such text.")
