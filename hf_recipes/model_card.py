"""The model card (``README.md``) of a run: hub metadata that is true of this run, how to load and prompt the model
with plain transformers / peft, what it is for, its settings and its figures; and, with ``--push_to_hub``, the
upload of the finished folder."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData, try_to_load_from_cache

from hf_recipes.model import is_local
from hf_recipes.run_folder import ADAPTER_MODEL_CONFIG, read_json
from hf_recipes.report import key_metrics, markdown_table, metrics_table

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
# Never uploaded: Trainer's checkpoints (its own pushes handle them) and private files, as Trainer.push_to_hub skips.
LIMITATIONS = (
    "It was fine-tuned and evaluated only on the data named above, and scored only by the figures above: check it "
    "on your own data before relying on it. It keeps the biases and gaps of its base model and of that data, and it "
    "has not been evaluated for safety, fairness or factual accuracy."
)


@dataclass
class CardExample:
    """How a recipe's model is prompted, for the card: one sentence on the format, and Python lines that call the
    ``generator`` / ``classifier`` pipeline the card's snippet builds."""

    prompt_format: str
    code: str
    intended_use: str
    limitations: str = ""


@dataclass
class TrainingProgress:
    """What training actually did, which can differ from the settings: steps run, early stopping, best model."""

    steps: int
    planned_steps: int
    stopped_early: bool
    best_checkpoint: str | None

    @classmethod
    def of(cls, trainer, early_stopping: bool) -> "TrainingProgress":
        state = trainer.state
        best = state.best_model_checkpoint if trainer.args.load_best_model_at_end else None  # else only tracked
        return cls(steps=state.global_step, planned_steps=state.max_steps,
                   stopped_early=early_stopping and state.global_step < state.max_steps,
                   best_checkpoint=Path(best).name if best else None)

    def describe(self) -> str:
        """E.g. ``8 steps of 40: early stopping ended training; the model is the best checkpoint (checkpoint-4)``."""
        text = f"{self.steps} steps" + (f" of {self.planned_steps}" if self.planned_steps != self.steps else "")
        if self.stopped_early:
            text += ": early stopping ended training"
        if self.best_checkpoint:
            text += f"; the model is the best checkpoint ({self.best_checkpoint})"
        return text


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


def base_license(model_id: str | None) -> str | None:
    """The license in the base model's own card: a local folder's README.md, or a hub model's when it is cached."""
    if not model_id:
        return None
    card = Path(model_id) / CARD_FILE if is_local(model_id) else try_to_load_from_cache(model_id, CARD_FILE)
    if not isinstance(card, (str, Path)) or not Path(card).is_file():
        return None
    try:
        return ModelCard.load(card).data.license
    except (OSError, ValueError):  # a card without readable metadata names no license
        return None


def scored_file(args, scored: str) -> str | None:
    """The local file of the split the model-index scores (validation carved from train: the train file)."""
    data = args.data
    file = data.test_file if scored == "test" else data.validation_file or data.train_file
    return Path(file).name if file else None


def usage(recipe, args, output_dir: Path, model_id: str) -> list[str]:
    """The card's "How to use" section: load with plain transformers (a LoRA run: peft's AutoPeftModel, which
    loads the base named in adapter_config.json and grows its vocabulary to the tokenizer's), then prompt."""
    example = recipe.model_card_example(args)
    classifier = recipe.model_card_task == "text-classification"
    name, model_id = "classifier" if classifier else "generator", json.dumps(model_id)  # a Python string literal
    if not args.peft.use_peft:
        code = ["from transformers import pipeline", "",
                f'{name} = pipeline("{recipe.model_card_task}", model={model_id})']
    elif classifier:
        # A base model has neither the run's labels nor its pad token: they go to the base's config as it loads.
        config = read_json(output_dir / ADAPTER_MODEL_CONFIG, "model config")
        labels = {int(i): label for i, label in config["id2label"].items()}
        code = ["from peft import AutoPeftModelForSequenceClassification",
                "from transformers import AutoTokenizer, pipeline", "",
                "model = AutoPeftModelForSequenceClassification.from_pretrained(",
                f"    {model_id}, id2label={labels!r},",
                f"    label2id={ {label: i for i, label in labels.items()}!r}, pad_token_id={config['pad_token_id']},",
                ").merge_and_unload()",
                f'{name} = pipeline("{recipe.model_card_task}", model=model, '
                f"tokenizer=AutoTokenizer.from_pretrained({model_id}))"]
    else:
        code = ["from peft import AutoPeftModelForCausalLM",
                "from transformers import AutoTokenizer, GenerationConfig, pipeline", "",
                f"model = AutoPeftModelForCausalLM.from_pretrained({model_id}).merge_and_unload()",
                "# the run's decoding settings and end-of-text token (the base's own would not stop a chat turn)",
                f"model.generation_config = GenerationConfig.from_pretrained({model_id})",
                f'{name} = pipeline("{recipe.model_card_task}", model=model, '
                f"tokenizer=AutoTokenizer.from_pretrained({model_id}))"]
    return ["## How to use", example.prompt_format, "```python\n" + "\n".join(code) + "\n" + example.code + "\n```",
            "## Intended use and limitations", example.intended_use, " ".join(filter(None, [example.limitations,
                                                                                          LIMITATIONS]))]


def write_model_card(output_dir: Path, recipe, args, metrics_by_split: dict[str, dict[str, float]],
                     verdict_message: str | None = None, progress: TrainingProgress | None = None,
                     repo_id: str | None = None) -> Path:
    """``output_dir/README.md``: base_model only for a hub model, datasets only for a hub dataset (local files
    are named in the text), license and language, the figures that describe the model (no runtimes or
    throughputs), and how to use it. Its snippet names ``repo_id``, the hub repository a pushed run goes to, else
    the folder."""
    output_dir = Path(output_dir)
    model_id, dataset_id = args.model.model_name_or_path, args.data.dataset_name
    base_model = model_id if model_id and not is_local(model_id) else None
    hub_dataset = dataset_id if dataset_id and not args.data.train_file and not is_local(dataset_id) else None
    settings = training_settings(args)
    figures = {split: key_metrics(metrics) for split, metrics in metrics_by_split.items() if split != "train"}
    scored = "test" if figures.get("test") else "eval"
    dataset_label = hub_dataset or settings["dataset"] or "local data"
    # model-index wants a dataset type: the hub id, else the file that was scored
    dataset_type = hub_dataset or scored_file(args, scored) or dataset_label
    eval_results = [
        EvalResult(task_type=recipe.model_card_task, dataset_type=dataset_type, dataset_name=dataset_label,
                   dataset_split="test" if scored == "test" else "validation",
                   metric_type=name.removeprefix(f"{scored}_"), metric_value=value)
        for name, value in figures.get(scored, {}).items()
    ]
    data = ModelCardData(
        model_name=Path(args.training.output_dir).name,
        base_model=base_model,
        license=args.run.license or base_license(model_id),
        language=list(args.run.language) or None,
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
        origin = f"Fine-tuned from the local model folder `{Path(model_id).resolve()}` (not a Hub model)"
    else:
        overrides = f" ({settings['model_overrides']})" if settings["model_overrides"] else ""
        origin = f"Trained from scratch (no base model): a new `{args.model.model_type}`{overrides}"
    data_text = (f"the Hub dataset [`{hub_dataset}`](https://huggingface.co/datasets/{hub_dataset})" if hub_dataset
                 else f"local files ({settings['dataset']}), not a Hub dataset")
    batch = (f"{settings['per_device_train_batch_size']} per device x {settings['gradient_accumulation_steps']} "
             f"accumulation x {settings['processes']} process(es)")
    length = (f"{settings['max_steps']} steps" if settings["max_steps"] > 0
              else f"{settings['num_train_epochs']:g} epoch(s)")
    if progress is not None and progress.describe() != length:  # what training did, when the settings do not say it
        length = f"{progress.describe()} (set: {length})"
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
    body += usage(recipe, args, output_dir, repo_id or str(output_dir.resolve()))
    if settings["lora"]:
        base = str(Path(model_id).resolve()) if is_local(model_id) else model_id
        body += ["## LoRA adapter",
                 f"This folder holds a LoRA adapter ({settings['lora']}) in PEFT format, for the base `{base}` "
                 "(`adapter_config.json`); `model_config.json` is the fine-tuned model's config (labels, pad token, "
                 "vocabulary). `hf-recipes predict` / `generate` load it with the run's labels and decoding settings. "
                 "With `peft.PeftModel.from_pretrained(base_model, this_folder)`, load the base model with the run's "
                 "labels and pad token (a classifier, as the snippet above does), and grow its vocabulary with "
                 "`base_model.resize_token_embeddings(len(tokenizer))` when the tokenizer has added tokens "
                 "(`AutoPeftModel` does that itself)."
                 + (" `merged/` holds the base with the adapter merged in, a plain transformers model."
                    if args.peft.merge_adapter else "")]
    body += ["## Training settings", markdown_table(rows),
             "The full report with its plots and checks is `report.md` in the run folder."]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(body) + "\n")
    path = output_dir / CARD_FILE
    card.save(path)
    return path
