"""LoRA / QLoRA with PEFT: the frozen base gets low-rank adapters, and output_dir holds the adapter in PEFT format.

A run with ``use_peft`` wraps the recipe's model in a ``PeftModel`` (the task type its model kind names:
CAUSAL_LM, or SEQ_CLS for a classifier, whose head PEFT trains in full as a module to save) before the Trainer is
built. output_dir is a PEFT adapter folder as peft and transformers expect it: ``adapter_config.json`` naming the base (an absolute path for a local one), the
adapter weights, the tokenizer and ``generation_config.json``, and no ``config.json`` (with one, transformers takes
the folder for a full model and looks for its weights). The fine-tuned model's own config (the run's labels, pad
token, grown vocabulary, architecture) is ``model_config.json``, so :func:`load_saved_adapter` rebuilds exactly the
trained model: the base from ``adapter_config.json``, with that config, then the adapter.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, BitsAndBytesConfig, GenerationConfig, PreTrainedModel
from transformers.utils import logging as transformers_logging

from hf_recipes.config import PeftArguments, RecipeArgs
from hf_recipes.errors import RecipeError, one_line
from hf_recipes.model import load_config
from hf_recipes.run_folder import (ADAPTER_CONFIG, ADAPTER_MODEL_CONFIG, MERGED_DIR, model_config_file,
                                  refuse_custom_code, saved_adapter)

logger = logging.getLogger(__name__)

def quantization_config(peft: PeftArguments) -> BitsAndBytesConfig | None:
    """QLoRA: the frozen base in 4 bits, computing in bf16."""
    if not peft.load_in_4bit:
        return None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=peft.bnb_4bit_quant_type,
                              bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)


def is_adapter(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def base_model_reference(name: str) -> str:
    """A local base folder as an absolute path (the adapter is loaded from other working directories); a hub id as
    it is."""
    path = Path(name)
    return str(path.resolve()) if path.exists() else name


def add_adapter(model: PreTrainedModel, args: RecipeArgs, task_type: str):
    """``model`` wrapped for LoRA training: every linear layer but the output head (or ``lora_target_modules``)
    gets an adapter. ``task_type`` is PEFT's (the recipe's model kind says which): with SEQ_CLS, a classifier's
    head is trained in full (``modules_to_save``)."""
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    peft, training = args.peft, args.training
    if peft.load_in_4bit:  # cannot run without CUDA: config.check_peft refuses it before anything is loaded
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(training.gradient_checkpointing),
            gradient_checkpointing_kwargs=training.gradient_checkpointing_kwargs)
    for option in ("lora_target_modules", "lora_modules_to_save"):
        check_module_names(model, getattr(peft, option) or [], option)
    # Tokens the tokenizer added to the base (e.g. ChatML's markers) get trainable rows: the base's are untrained.
    base_rows = load_config(args.model).vocab_size
    added_tokens = list(range(base_rows, model.get_input_embeddings().weight.shape[0]))
    config = LoraConfig(
        task_type=TaskType[task_type],
        r=peft.lora_r, lora_alpha=peft.lora_alpha, lora_dropout=peft.lora_dropout,
        target_modules=peft.lora_target_modules or "all-linear",
        modules_to_save=list(peft.lora_modules_to_save) if peft.lora_modules_to_save else None,
        trainable_token_indices=added_tokens or None,
        ensure_weight_tying=bool(added_tokens) and bool(getattr(model.config, "tie_word_embeddings", False)),
        revision=args.model.model_revision,
    )
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as err:  # e.g. a target module the model does not have
        raise RecipeError(f"cannot add LoRA adapters: {one_line(err)}") from None
    # get_peft_model names the base by the model's name_or_path, as given (maybe relative to this directory)
    wrapped.peft_config[wrapped.active_adapter].base_model_name_or_path = base_model_reference(
        args.model.model_name_or_path)
    if added_tokens:
        # The added rows are saved as trainable tokens; peft would also save the whole embedding layer (and a tied
        # head) because the vocabulary grew: for GPT-2 150 MB of base weights in every adapter and checkpoint.
        wrapped.save_pretrained = functools.partial(wrapped.save_pretrained, save_embedding_layers=False)
    trainable, total = wrapped.get_nb_trainable_parameters()
    logger.info("LoRA: %d of %d parameters trainable (%.2f%%)", trainable, total, 100 * trainable / total)
    return wrapped


def check_module_names(model: PreTrainedModel, targets: list[str], option: str) -> None:
    """Each name in ``option`` names a module (by its full name or its last parts, as PEFT matches them)."""
    from transformers.pytorch_utils import Conv1D

    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(name == t or name.endswith("." + t) for name in names)]
    if missing:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, (torch.nn.Linear, Conv1D))})
        raise RecipeError(f"{option} {', '.join(missing)}: no module of that name in this "
                          f"{type(model).__name__}; its linear layers are {', '.join(linear)}")


def facts(model, peft: PeftArguments) -> dict[str, str]:
    """The report's lines on the adapter: trainable parameters and the LoRA settings."""
    trainable, total = model.get_nb_trainable_parameters()
    from peft.utils import ModulesToSaveWrapper

    config = model.peft_config[model.active_adapter]
    saved_in_full = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                            if isinstance(module, ModulesToSaveWrapper)})
    quantized = f", base in 4 bits ({peft.bnb_4bit_quant_type}, QLoRA)" if peft.load_in_4bit else ""
    return {
        "trainable parameters": f"{trainable:,} of {total:,} ({100 * trainable / total:.2f}%)",
        "LoRA": f"r {config.r}, alpha {config.lora_alpha}, dropout {config.lora_dropout}{quantized}; on "
                + ", ".join(sorted(adapted_module_names(model)))
                + (f"; trained in full: {', '.join(saved_in_full)}" if saved_in_full else ""),
    }


def adapted_module_names(model) -> set[str]:
    """The distinct module names (last part, e.g. ``c_attn``) that carry a LoRA adapter."""
    from peft.tuners.lora import LoraLayer

    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def save_model_files(model, output_dir: str | Path) -> None:
    """Beside the adapter: the fine-tuned model's config (labels, pad token, architecture) as ``model_config.json``,
    and its generation settings (a chat run's end-of-turn EOS among them)."""
    base = model.get_base_model()
    config = base.config
    config.architectures = [type(base).__name__]
    config.to_json_file(Path(output_dir) / ADAPTER_MODEL_CONFIG)
    generation_config = getattr(base, "generation_config", None)
    if generation_config is not None and base.can_generate():
        generation_config.save_pretrained(output_dir)


def load_saved_adapter(model_dir: str | Path, model_class, trust_remote_code: bool = False, is_trainable=False):
    """A run's trained model from its adapter folder: the base named in ``adapter_config.json`` (a local folder is
    checked for custom code like any model folder), with the run's own config (a classifier's labels), then the
    adapter and any modules it trained in full."""
    from peft import PeftModel

    path = Path(model_dir)
    base = saved_adapter(path).get("base_model_name_or_path")
    if not base:
        raise RecipeError(f"{path / ADAPTER_CONFIG} names no base_model_name_or_path")
    if Path(base).is_absolute() and not Path(base).is_dir():
        raise RecipeError(f"the base model of the adapter in {path} is gone: {base} (adapter_config.json "
                          "base_model_name_or_path)")
    if Path(base).is_dir():
        refuse_custom_code(Path(base), trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(model_config_file(path), trust_remote_code=trust_remote_code)
        # A run that added tokens saved a larger vocabulary than the base has: load the base's, then grow it (the
        # adapter holds the embeddings with the added rows)
        rows, config.vocab_size = config.vocab_size, AutoConfig.from_pretrained(
            base, trust_remote_code=trust_remote_code).vocab_size
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # a classifier's head is "missing" from the base: the adapter has it
        try:
            model = model_class.from_pretrained(base, config=config, use_safetensors=True,
                                                trust_remote_code=trust_remote_code)
        finally:
            transformers_logging.set_verbosity(verbosity)
        if rows > config.vocab_size:
            model.resize_token_embeddings(rows)
        if (path / "generation_config.json").is_file():  # the run's decoding settings, not the base's
            model.generation_config = GenerationConfig.from_pretrained(path)
        return PeftModel.from_pretrained(model, path, is_trainable=is_trainable)
    except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: weights of another shape
        raise RecipeError(f"could not load the base model '{base}' of the adapter in {path}: {one_line(err)}") from None


def save_merged(output_dir: str | Path, model_class, tokenizer) -> Path:
    """``output_dir/merged``: the saved adapter merged into a freshly loaded, unquantized base, so the merged model
    is what the saved adapter gives (and a QLoRA adapter merges into full-precision weights)."""
    merged = load_saved_adapter(output_dir, model_class).merge_and_unload()
    folder = Path(output_dir) / MERGED_DIR
    merged.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    logger.info("Merged model written to %s", folder)
    return folder


def load_trained(model_dir: str | Path, model_class, trust_remote_code: bool = False) -> PreTrainedModel:
    """The trained model of a run folder, adapter or full model, as a plain transformers model (for an adapter: the
    base with the LoRA layers in place, which computes exactly what the PeftModel does)."""
    if saved_adapter(Path(model_dir)) is not None:
        return load_saved_adapter(model_dir, model_class, trust_remote_code).get_base_model()
    return model_class.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=trust_remote_code)


def check_adapter_checkpoint(path: Path, model) -> bool:
    """A LoRA run resumes from a LoRA checkpoint of the same task, rank and targets, and a full fine-tuning run from a
    full-model one. True when both are adapters (and match)."""
    saved = saved_adapter(path)
    if saved is None and not is_adapter(model):
        return False
    if saved is None:
        raise RecipeError(f"checkpoint {path} holds a full model, but this run trains a LoRA adapter (use_peft): "
                          "resume it without --use_peft, or resume from a checkpoint of a LoRA run")
    if not is_adapter(model):
        raise RecipeError(f"checkpoint {path} holds a LoRA adapter, but this run trains the full model: resume it "
                          "with --use_peft true and the same LoRA settings, or from a full-model checkpoint")
    config = model.peft_config[model.active_adapter]
    expected = {"task_type": getattr(config.task_type, "value", config.task_type), "r": config.r,
                "target_modules": sorted(adapted_module_names(model))}
    found = {**saved, "target_modules": sorted({name.rsplit(".", 1)[-1] for name in saved.get("target_modules") or []})}
    for key, value in expected.items():
        if key in found and found[key] != value:
            raise RecipeError(f"checkpoint {path} has an adapter with {key} {found[key]}, but this run's adapter has "
                              f"{value}: resume with the same recipe and LoRA settings")
    return True
