"""Text generation shared by the causal-LM recipes: batched, left-padded, reproducible with a seed.

The settings import without torch (`hf-recipes generate` builds its flags from them before any model is loaded).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from hf_recipes.errors import RecipeError, did_you_mean

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel


# The library's sampling settings, for what neither the user nor the base model's generation_config sets.
SAMPLING_DEFAULTS = {"temperature": 0.8, "top_k": 50, "top_p": 0.95}
FROM_BASE = " (unset: the base model's generation_config value when it samples, else {})."


@dataclass
class GenerationArguments:
    """Decoding settings; config keys of every causal-LM recipe, and of `hf-recipes generate` and the recipes'
    ``generate`` functions (:func:`settings_of_run`)."""

    max_new_tokens: int = field(default=64, metadata={"help": "Tokens to generate per prompt."})
    do_sample: bool = field(default=True, metadata={"help": "Sample (true) or decode greedily (false)."})
    temperature: float | None = field(
        default=None, metadata={"help": "Sampling temperature" + FROM_BASE.format(SAMPLING_DEFAULTS["temperature"])}
    )
    top_k: int | None = field(
        default=None,
        metadata={"help": "Sample among the k most likely tokens" + FROM_BASE.format(SAMPLING_DEFAULTS["top_k"])},
    )
    top_p: float | None = field(
        default=None, metadata={"help": "Nucleus sampling mass" + FROM_BASE.format(SAMPLING_DEFAULTS["top_p"])}
    )
    repetition_penalty: float = field(default=1.1, metadata={"help": "Penalty for repeating tokens (1 = none)."})
    generation_seed: int = field(default=1234, metadata={"help": "Seed for sampling, so generations repeat."})
    generation_batch_size: int = field(default=16, metadata={"help": "Prompts per generate() call."})

    def __post_init__(self):
        check_generation_settings(self)

    def sampling_from(self, base) -> GenerationArguments:
        """A copy whose unset sampling settings are filled: the user's setting, else the base model's
        ``generation_config`` (``base``, when it samples), else :data:`SAMPLING_DEFAULTS`. Filled for greedy decoding
        too, so a later sampling call knows the base's, but a greedy :meth:`generation_config` never carries them."""
        filled = copy.copy(self)
        for name, default in SAMPLING_DEFAULTS.items():
            if getattr(filled, name) is None:
                from_base = getattr(base, name, None) if getattr(base, "do_sample", False) else None
                setattr(filled, name, default if from_base is None else from_base)
        return filled

    def decoding_settings(self) -> dict:
        """The settings that decide the generated tokens: the sampling ones only when sampling."""
        settings = {"do_sample": self.do_sample, "max_new_tokens": self.max_new_tokens,
                    "repetition_penalty": self.repetition_penalty}
        if self.do_sample:
            filled = self.sampling_from(None)
            settings.update(temperature=filled.temperature, top_k=filled.top_k, top_p=filled.top_p,
                            generation_seed=self.generation_seed)
        return settings

    def describe_decoding(self) -> str:
        """E.g. ``greedy, max_new_tokens 256, repetition_penalty 1.0``, for reports."""
        settings = self.decoding_settings()
        how = "sampled" if settings.pop("do_sample") else "greedy"
        return ", ".join([how, *(f"{key} {value}" for key, value in settings.items())])

    def generation_config(self, tokenizer) -> GenerationConfig:
        from transformers import GenerationConfig

        decoding = self.decoding_settings()
        decoding.pop("generation_seed", None)
        return GenerationConfig(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **decoding)


@dataclass
class AnswerArguments(GenerationArguments):
    """Decoding of answers to instructions: plain greedy decoding, as answers scored against references are; the
    defaults of instruction recipes and of `hf-recipes generate --instruction` on a folder without recipe.json."""

    do_sample: bool = field(default=False, metadata={"help": "Sample (true) or decode greedily (false)."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Penalty for repeating tokens (1 = none)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Tokens to generate per answer."})


def check_generation_settings(settings: GenerationArguments) -> None:
    """Settings generate() would reject only at the end of a run are errors before anything starts; unset ones
    are filled from the base model or the defaults later (:meth:`GenerationArguments.sampling_from`)."""
    positive = {"max_new_tokens": settings.max_new_tokens, "generation_batch_size": settings.generation_batch_size,
                "repetition_penalty": settings.repetition_penalty}
    if settings.do_sample and settings.temperature is not None:
        positive["temperature"] = settings.temperature
    for name, value in positive.items():
        if value is None or not value > 0:
            raise RecipeError(f"{name} must be a positive number, got {value}"
                              + (" (for greedy decoding set do_sample false)" if name == "temperature" else ""))
    if settings.do_sample and settings.top_p is not None and not 0 < settings.top_p <= 1:
        raise RecipeError(f"top_p must be in (0, 1], got {settings.top_p}")
    if settings.do_sample and settings.top_k is not None and settings.top_k < 0:
        raise RecipeError(f"top_k must be 0 (off) or more, got {settings.top_k}")


def settings_of_run(task_args_class: type, saved_task: dict, **given) -> GenerationArguments:
    """The decoding of a saved run: each setting ``given`` (None: not given), else the run's own (the task settings
    in its recipe.json), else the default of the recipe's ``task_args_class``. Sampling settings still unset come
    from the model's generation_config when :func:`generate` runs. The one place `hf-recipes generate` and the
    recipes' ``generate`` functions take their settings from."""
    names = [f.name for f in dataclasses.fields(GenerationArguments)]
    unknown = [key for key in given if key not in names]
    if unknown:
        raise RecipeError(f"unknown generation setting '{unknown[0]}'{did_you_mean(unknown[0], names)}")
    defaults = {f.name: f.default for f in dataclasses.fields(task_args_class) if f.name in names}
    return GenerationArguments(**{**defaults, **{k: v for k, v in saved_task.items() if k in names},
                                  **{k: v for k, v in given.items() if v is not None}})


def generate(
    model: PreTrainedModel, tokenizer, prompts: Sequence[str], settings: GenerationArguments, add_bos: bool = True
) -> list[str]:
    """Continue each prompt; returns only the new text, cut at the first EOS.

    Prompts are left-padded in batches (generation appends on the right); the attention mask hides the
    padding and generate() derives position ids from it, so a prompt gives the same tokens alone or in a batch.
    Batches hold prompts of similar length (less padding); outputs come back in the order of ``prompts``.
    Each prompt starts with the tokenizer's BOS (if it adds one) unless ``add_bos`` is off (a prompt rendered
    by a chat template holds its own), and never ends with an EOS the tokenizer would add.
    Prompt and answer stay inside the model's context: a prompt too long for it keeps its end (where the
    answer starts), and a batch near the limit gets fewer new tokens, rather than failing at the end of a run.
    """
    from transformers import set_seed  # model.generate() itself runs without gradients

    from hf_recipes.model import bos_prefix, context_length

    was_training = model.training
    model.eval()
    # A copy: padding and truncation settings stick to a fast tokenizer (and to the tokenizer.json it saves).
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = "left"
    decoder = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel's generates
    settings = settings.sampling_from(decoder.generation_config)
    config = settings.generation_config(tokenizer)
    context = context_length(model.config)
    prompt_limit = max(1, context - min(settings.max_new_tokens, context // 2))
    # generate() fills every field the config leaves unset from the model's own generation config (a base's
    # n-gram blocking or sampling defaults); with the config in its place, the settings alone decide the tokens.
    model_config, decoder.generation_config = decoder.generation_config, config
    set_seed(settings.generation_seed)
    prefix = bos_prefix(tokenizer) if add_bos else []
    room = max(1, prompt_limit - len(prefix))  # a prompt too long keeps its BOS and its end, where the answer starts
    prompt_ids = [prefix + ids[-room:] for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))
    outputs: dict[int, str] = {}
    try:
        for start in range(0, len(order), settings.generation_batch_size):
            indices = order[start : start + settings.generation_batch_size]
            batch = tokenizer.pad({"input_ids": [prompt_ids[i] for i in indices]}, return_tensors="pt").to(model.device)
            config.max_new_tokens = min(settings.max_new_tokens, context - batch["input_ids"].shape[1])
            generated = model.generate(**batch, generation_config=config)
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            outputs.update(zip(indices, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)))
    finally:
        model.train(was_training)
        decoder.generation_config = model_config
    return [outputs[i] for i in range(len(prompts))]


def load_causal_lm(model_dir: str | Path, trust_remote_code: bool = False):
    """Model (eval mode, on the GPU when there is one) and tokenizer of a saved run."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_recipes.run_folder import CAUSAL_LM, open_model_dir

    path = open_model_dir(model_dir, CAUSAL_LM, trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    from hf_recipes.adapters import load_trained

    model = load_trained(path, AutoModelForCausalLM, trust_remote_code)
    if torch.cuda.is_available():
        model = model.cuda()
    return model.eval(), tokenizer
