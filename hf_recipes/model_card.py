"""The model card (``README.md``) of a run: hub metadata that is true of this run, its settings and its figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_recipes.model import is_local
from hf_recipes.report import key_metrics, markdown_table, metrics_table

CARD_FILE = "README.md"


def training_settings(args) -> dict[str, Any]:
    """What a reader needs to know to compare or repeat a run (recipe.json, the model card, `hf-recipes compare`)."""
    model, data, training = args.model, args.data, args.training
    data_files = [Path(f).name for f in (data.train_file, data.validation_file, data.test_file) if f]
    return {
        "model": model.model_name_or_path or f"{model.model_type} from scratch",
        "model_overrides": model.config_overrides,
        "lora": lora_settings(args.peft),
        "dataset": ", ".join(data_files) or data.dataset_name,  # local files win over dataset_name
        "learning_rate": training.learning_rate,
        "lr_scheduler_type": getattr(training.lr_scheduler_type, "value", str(training.lr_scheduler_type)),
        "warmup_steps": training.warmup_steps,
        "weight_decay": training.weight_decay,
        "per_device_train_batch_size": training.per_device_train_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "processes": training.world_size,
        "num_train_epochs": training.num_train_epochs,
        "max_steps": training.max_steps,
        "precision": ("bf16" if training.bf16 else "fp16" if training.fp16
                      else "fp32" if model.dtype == "float32" else model.dtype),  # compute: autocast, else the weights
        "weights_dtype": model.dtype,  # float32 unless pure low-precision training was asked for
        "seed": training.seed,
    }


def lora_settings(peft) -> str | None:
    """E.g. ``r 16, alpha 32, dropout 0.05, all-linear``; None for full fine-tuning."""
    if not peft.use_peft:
        return None
    targets = " ".join(peft.lora_target_modules) if peft.lora_target_modules else "all-linear"
    return (f"r {peft.lora_r}, alpha {peft.lora_alpha}, dropout {peft.lora_dropout}, {targets}"
            + (f", 4-bit {peft.bnb_4bit_quant_type} base" if peft.load_in_4bit else ""))


def write_model_card(output_dir: Path, recipe, args, metrics_by_split: dict[str, dict[str, float]],
                     verdict_message: str | None = None) -> Path:
    """``output_dir/README.md``: base_model only for a hub model, datasets only for a hub dataset (local files
    are named in the text), the figures that describe the model (no runtimes or throughputs)."""
    model_id, dataset_id = args.model.model_name_or_path, args.data.dataset_name
    base_model = model_id if model_id and not is_local(model_id) else None
    hub_dataset = dataset_id if dataset_id and not args.data.train_file and not is_local(dataset_id) else None
    settings = training_settings(args)
    figures = {split: key_metrics(metrics) for split, metrics in metrics_by_split.items() if split != "train"}
    scored = "test" if figures.get("test") else "eval"
    dataset_label = hub_dataset or settings["dataset"] or "local data"
    eval_results = [
        EvalResult(task_type=recipe.model_card_task, dataset_type=hub_dataset or "local", dataset_name=dataset_label,
                   dataset_split="test" if scored == "test" else "validation",
                   metric_type=name.removeprefix(f"{scored}_"), metric_value=value)
        for name, value in figures.get(scored, {}).items()
    ]
    data = ModelCardData(
        model_name=Path(args.training.output_dir).name,
        base_model=base_model,
        datasets=[hub_dataset] if hub_dataset else None,
        pipeline_tag=recipe.model_card_task,
        library_name="peft" if settings["lora"] else "transformers",
        tags=["hf-recipes", recipe.name, *(["lora"] if settings["lora"] else [])],
        metrics=[r.metric_type for r in eval_results] or None,
        eval_results=eval_results or None,
    )
    if base_model:
        origin = f"Fine-tuned from [`{base_model}`](https://huggingface.co/{base_model})"
    elif model_id:
        origin = f"Fine-tuned from the local model folder `{model_id}` (not a Hub model)"
    else:
        overrides = f" ({settings['model_overrides']})" if settings["model_overrides"] else ""
        origin = f"Trained from scratch (no base model): a new `{args.model.model_type}`{overrides}"
    data_text = (f"the Hub dataset [`{hub_dataset}`](https://huggingface.co/datasets/{hub_dataset})" if hub_dataset
                 else f"local files ({settings['dataset']}), not a Hub dataset")
    batch = (f"{settings['per_device_train_batch_size']} per device x {settings['gradient_accumulation_steps']} "
             f"accumulation x {settings['processes']} process(es)")
    length = (f"{settings['max_steps']} steps" if settings["max_steps"] > 0
              else f"{settings['num_train_epochs']:g} epoch(s)")
    rows = [
        {"setting": "learning rate", "value": settings["learning_rate"]},
        {"setting": "batch", "value": batch},
        {"setting": "length", "value": length},
        {"setting": "precision", "value": f"weights {settings['weights_dtype']}, compute {settings['precision']}"},
        {"setting": "scheduler", "value": f"{settings['lr_scheduler_type']}, warmup {settings['warmup_steps']}"},
        {"setting": "weight decay", "value": settings["weight_decay"]},
        {"setting": "seed", "value": settings["seed"]},
        *([{"setting": "LoRA", "value": settings["lora"]}] if settings["lora"] else []),
    ]
    body = [
        f"# {data.model_name}",
        f"{origin}, by the hf-recipes `{recipe.name}` recipe ({recipe.title}), on {data_text}.",
        "## Results",
        metrics_table({split: f for split, f in figures.items() if f}) if any(figures.values()) else "_(none)_",
    ]
    if verdict_message:
        body.append(verdict_message)
    if settings["lora"]:
        body += ["## LoRA adapter",
                 f"This folder holds a LoRA adapter ({settings['lora']}) in PEFT format, for the base "
                 f"`{model_id}`: `hf-recipes predict` / `generate` load it with the run's labels and decoding settings; "
                 "in Python, `peft.PeftModel.from_pretrained(base, this_folder)`."
                 + (" `merged/` holds the base with the adapter merged in, a plain transformers model."
                    if args.peft.merge_adapter else "")]
    body += ["## Training settings", markdown_table(rows),
             "The full report with its plots and checks is `report.md` in the run folder."]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(body) + "\n")
    path = Path(output_dir) / CARD_FILE
    card.save(path)
    return path
