"""One run of a recipe, top to bottom: parse, screen the data, build the Trainer, train, evaluate, test, save, check,
report. The recipe (hf_recipes.recipe.Recipe) supplies only what is task-specific: its data, its model and tokenized
splits, its metrics, its checks and report sections; its ``kind`` (hf_recipes.model_kinds) what a kind of model
changes.

    from hf_recipes import run
    from hf_recipes.recipes import lyrics
    metrics = run.run(lyrics.RECIPE, lyrics.RECIPE.parse(lyrics.demo_config))
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import transformers
from datasets import DatasetDict
from transformers import EarlyStoppingCallback, PreTrainedModel, PreTrainedTokenizerBase, set_seed

from hf_recipes import adapters, forgetting, run_folder, upstream
from hf_recipes.checks import Leakage, RunState, leakage_sample, screen_splits
from hf_recipes.config import RecipeArgs
from hf_recipes.data import check_targets, rows_of
from hf_recipes.errors import RecipeError
from hf_recipes.generation import GenerationArguments
from hf_recipes.hub import push_finished_run
from hf_recipes.metrics import check_metrics, load_metrics
from hf_recipes.model import clean_tokenizer_state
from hf_recipes.model_card import TrainingProgress, training_settings, write_model_card
from hf_recipes.precision import resolve_precision
from hf_recipes.report import Report, write_report
from hf_recipes.trainer import RecipeTrainer, check_checkpoint, make_trainer

logger = logging.getLogger("hf_recipes")


@dataclass
class Prepared:
    """A recipe's task-specific parts, ready for the shared Trainer factory."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    raw: DatasetDict  # untokenized splits, for reports and generation
    datasets: DatasetDict  # tokenized splits the Trainer consumes
    data_collator: Callable
    eval_data_collator: Callable | None = None  # when evaluation batches differ from training ones
    compute_metrics: Callable | None = None  # causal LMs default to the exact mean token loss
    preprocess_logits_for_metrics: Callable | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # data facts for the report (rows dropped, ...)
    before: dict[str, Any] = field(default_factory=dict)  # what before_training measured, for after_training
    label_names: list[str] | None = None  # classification: label names in id order
    leakage: Leakage | None = None
    forgetting_text: str | None = None  # forgetting_eval_file, read (and checked) before anything is trained
    resume_from: str | None = None  # the checkpoint training resumes from (checked against the model)


def run(recipe, args: RecipeArgs) -> dict:
    """Train, evaluate, test, save and report; return all metrics (train_*, eval_*, test_*). A run that fails
    before it saved anything leaves no output_dir behind."""
    with run_folder.removed_on_failure(args.training.output_dir, args.training.process_index == 0):
        return train_and_report(recipe, args)


def build_trainer(recipe, args: RecipeArgs) -> tuple[RecipeTrainer, Prepared]:
    """Everything before training: settings checked, data loaded and screened, model prepared, Trainer built."""
    setup_logging(args.training)
    for note in args.renamed:
        logger.info(note)
    if args.training.hub_token:
        # Trainer pickles TrainingArguments into every training_args.bin; the hub client reads HF_TOKEN as well.
        os.environ["HF_TOKEN"] = args.training.hub_token
        args.training.hub_token = None
    run_folder.check_output_dir(args.training.output_dir, recipe.name, args.run.overwrite_output_dir)
    precision = resolve_precision(args.training, args.run.mixed_precision)
    if args.training.device.type == "cpu":
        args.training.dataloader_pin_memory = False  # pinning only helps host-to-GPU copies
    logger.info("Recipe %s: precision %s, device %s", recipe.name, precision, args.training.device)
    set_seed(args.training.seed)
    forgetting_file = args.checks.forgetting_eval_file
    forgetting_text = forgetting.read_text(forgetting_file) if forgetting_file else None  # fails before training
    recipe.kind.check_settings(args, recipe.name)
    if args.checks.metric_names and recipe.metric_inputs is None:
        raise RecipeError(f"metric_names does not apply to {recipe.name}: it scores nothing beyond its loss")
    extra_metrics = load_metrics(args.checks.metric_names)  # the hub's absence fails before any data is read

    raw = recipe.load_data(args)
    leakage = screen(recipe, raw, args)
    args.model.quantization_config = adapters.quantization_config(args.peft)
    prepared = recipe.prepare(args, raw)
    if isinstance(args.task, GenerationArguments):
        # The run's decoding replaces the base's whole generation config (sampling defaults, n-gram blocking,
        # penalties would otherwise fill every field the run leaves unset); it is saved with the model and
        # checkpoints, so pipeline("text-generation") decodes as `hf-recipes generate` and the report say.
        args.task = args.task.sampling_from(prepared.model.generation_config)  # the base's, for unset ones
        prepared.model.generation_config = args.task.generation_config(prepared.tokenizer)
        prepared.model.generation_config.validate(strict=True)  # as saving will, but before training
    if args.peft.use_peft:
        prepared.model = adapters.add_adapter(prepared.model, args, recipe.kind.lora_task_type)
        prepared.facts.update(adapters.facts(prepared.model, args.peft))
    prepared.leakage, prepared.forgetting_text = leakage, forgetting_text
    check_prepared(recipe, prepared, args)
    if extra_metrics:
        check_metrics(extra_metrics, *recipe.metric_example(prepared, args), recipe.metric_inputs)
    prepared.resume_from = checkpoint_to_resume(args)
    if prepared.resume_from:
        check_checkpoint(prepared.resume_from, prepared.model)

    compute_metrics, preprocess_logits = recipe.kind.metric_functions(prepared)
    trainer = make_trainer(
        model=prepared.model, tokenizer=prepared.tokenizer, training_args=args.training,
        train_dataset=prepared.datasets["train"], eval_dataset=prepared.datasets["validation"],
        data_collator=prepared.data_collator, eval_data_collator=prepared.eval_data_collator,
        fused_lm_loss=args.run.fused_lm_loss,
        compute_metrics=compute_metrics, preprocess_logits_for_metrics=preprocess_logits,
        callbacks=[EarlyStoppingCallback(args.run.early_stopping_patience, args.run.early_stopping_threshold)]
        if args.run.early_stopping_patience is not None else [],
    )
    if trainer.is_world_process_zero():
        run_folder.mark_output_dir(args.training.output_dir, recipe.name)
    return trainer, prepared


def train_and_report(recipe, args: RecipeArgs) -> dict:
    trainer, prepared = build_trainer(recipe, args)
    report, state = Report(recipe.title), RunState(recipe, args, trainer, prepared)
    checks = [check for check in recipe.checks if check.applies(state)]
    start_metrics = recipe.kind.evaluate_start(trainer)
    recipe.before_training(trainer, prepared, args, report)
    for check in checks:
        check.before_training(state)
    # Generating text before training draws from the random generators; reseed so the run trains exactly as
    # build_trainer() + train() (and each sweep trial) with the same seed does.
    set_seed(args.training.seed)

    metrics = {"train": train(trainer, prepared, state)}
    metrics["eval"] = save_split_metrics(recipe, trainer, "eval", trainer.evaluate(), prepared.datasets["validation"])
    if start_metrics:
        recipe.kind.compare_start(report, start_metrics, metrics["eval"])
    test_output = None
    if "test" in prepared.datasets:
        test_output = trainer.predict(prepared.datasets["test"], metric_key_prefix="test")
        metrics["test"] = save_split_metrics(recipe, trainer, "test", test_output.metrics, prepared.datasets["test"])
    state.scored = recipe.kind.scored_output(trainer, prepared, test_output)

    # The model is saved: from here on a failing step (a check, generations, the report) is recorded in
    # checks.json and report.md, and the run still finishes.
    step = partial(run_step, state.failed)
    for check in checks:
        if check.every_process or trainer.is_world_process_zero():
            step(check.name, check.after_training, state)
    extra = step("task report", recipe.after_training, trainer, prepared, args, report, state.scored)
    if extra and "test" in metrics:  # e.g. scores of generated answers
        metrics["test"].update(extra)
        trainer.log_metrics("test", extra)
        trainer.save_metrics("test", metrics["test"])
    if trainer.is_world_process_zero():
        write_results(recipe, state, report, metrics)
    return {k: v for split_metrics in metrics.values() for k, v in split_metrics.items()}


def setup_logging(training_args) -> None:
    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    upstream.log_to_current_stderr()  # a later run in the same process logs to the stderr of its own time
    logger.setLevel(logging.INFO if level <= logging.INFO or training_args.should_log else level)
    transformers.utils.logging.set_verbosity(level)


def screen(recipe, raw: DatasetDict, args: RecipeArgs) -> Leakage | None:
    """Count rows shared between train and validation/test; with --dedupe_splits, drop them from train."""
    if not (args.checks.check_leakage or args.checks.dedupe_splits):
        return None
    texts = {split: recipe.leakage_texts(dataset, args) for split, dataset in leakage_sample(raw).items()}
    return screen_splits(raw, texts, recipe.leakage_unit, args.checks.dedupe_splits)


def check_prepared(recipe, prepared: Prepared, args: RecipeArgs) -> None:
    """The prepared splits can teach and be scored: targets in train and validation, and the kind's own checks."""
    check_targets(prepared.datasets, recipe.no_targets_hint(args), recipe.kind.holds_target)
    recipe.kind.check_prepared(prepared, args)


def checkpoint_to_resume(args: RecipeArgs) -> str | None:
    """--resume_from_checkpoint PATH, else the newest complete checkpoint of an interrupted run in output_dir
    (re-running the same command resumes), unless --overwrite_output_dir asks for a fresh start."""
    if args.training.resume_from_checkpoint:
        return str(Path(args.training.resume_from_checkpoint))
    if args.run.overwrite_output_dir:
        return None
    found = run_folder.last_complete_checkpoint(args.training.output_dir)
    if found:
        logger.info("Resuming the interrupted run from %s", found)
    return found


def train(trainer: RecipeTrainer, prepared: Prepared, state: RunState) -> dict[str, float]:
    """Train (resuming when there is a checkpoint) and save the model, its state and train metrics."""
    # Read before training: by its end, save_total_limit may have removed the checkpoint
    resumed_at = run_folder.checkpoint_step(prepared.resume_from) if prepared.resume_from else None
    train_result = trainer.train(resume_from_checkpoint=prepared.resume_from)
    state.training_log = list(trainer.state.log_history)  # the curves as trained, before any final evaluation
    metrics, train_rows = dict(train_result.metrics), rows_of(prepared.datasets["train"])
    if train_rows is not None:  # a streamed train split has no row count
        metrics["train_samples"] = train_rows
    if resumed_at is not None:
        metrics.update(train_loss_of_resumed_run(trainer.state.log_history, resumed_at, trainer.state.global_step,
                                                 metrics["train_loss"]))
    share = trainer.real_token_share()
    if share is not None:
        metrics["train_real_token_share"] = share
    clean_tokenizer_state(prepared.tokenizer)
    # Not Trainer's push of a half-written folder with its own card (and a failed upload would end the run): the
    # finished folder is uploaded once, after everything is written (write_results).
    trainer.save_model(_internal_call=True)
    if adapters.is_adapter(prepared.model) and trainer.is_world_process_zero():
        # The adapter is saved: a failure here is recorded, and the run still ends with its metrics and recipe.json
        run_step(state.failed, "model files beside the adapter", adapters.save_model_files, prepared.model,
                 trainer.args.output_dir)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    return metrics


def save_split_metrics(recipe, trainer: RecipeTrainer, prefix: str, metrics: dict, dataset) -> dict[str, float]:
    metrics = {**metrics, f"{prefix}_samples": len(dataset)}
    recipe.kind.add_split_metrics(metrics, prefix)
    trainer.log_metrics(prefix, metrics)
    trainer.save_metrics(prefix, metrics)
    return metrics


def write_results(recipe, state: RunState, report: Report, metrics: dict[str, dict[str, float]]) -> None:
    """report.md, the model card, checks.json and, last, recipe.json (which marks the run finished)."""
    args, step = state.args, partial(run_step, state.failed)
    output_dir = Path(args.training.output_dir)
    if args.run.report:
        step("report", write_report, state, report, metrics)
    trainer = state.trainer
    step("model card", write_model_card, output_dir, recipe, args, metrics,
         state.verdict.message if state.verdict else None,
         TrainingProgress.of(trainer, args.run.early_stopping_patience is not None),
         trainer.hub_model_id if args.training.push_to_hub else None)
    if state.failed:
        state.found["failed_steps"] = state.failed
    if args.peft.merge_adapter:
        step("merged model", adapters.save_merged, output_dir, type(state.prepared.model.get_base_model()),
             state.prepared.tokenizer)
    (output_dir / run_folder.CHECKS_FILE).write_text(json.dumps(state.found, indent=1, default=str) + "\n")
    task = dataclasses.asdict(args.task) if dataclasses.is_dataclass(args.task) else {}
    finished = {"recipe": recipe.name, "model_kind": recipe.kind.name, "task": task,
                "settings": training_settings(args)}
    prompt_format = recipe.prompt_format(args.task)
    if prompt_format is not None:  # how `hf-recipes generate` prompts the model, read without the recipe's code
        finished["prompt_format"] = dataclasses.asdict(prompt_format)
    if isinstance(args.task, GenerationArguments):  # the settings the report's generations were made with
        finished["decoding"] = args.task.decoding_settings()
    for folder in (output_dir / run_folder.MERGED_DIR, output_dir):  # merged/ is prompted as the run was trained
        if folder.is_dir():
            run_folder.write_recipe_file(folder, finished)
    if args.training.push_to_hub:  # the finished folder, once; a failed upload leaves the run finished here
        step("push to hub", push_finished_run, output_dir, trainer, recipe.name)


def train_loss_of_resumed_run(log_history: list[dict], resumed_at: int, global_step: int,
                              loss_since_resume: float) -> dict[str, float]:
    """After a resume, Trainer's ``train_loss`` is the mean over the steps since the resume only. The steps before
    are in the log: each logged loss is the mean over the steps since the log before it. Where those logs reach the
    resume step, ``train_loss`` becomes the whole run's mean and the figure since the resume is kept beside it;
    otherwise ``train_loss_from_step`` says which steps it covers."""
    total, logged_to = 0.0, 0
    for entry in log_history:
        if "loss" in entry and logged_to < entry["step"] <= resumed_at:
            total, logged_to = total + entry["loss"] * (entry["step"] - logged_to), entry["step"]
    if logged_to != resumed_at:
        return {"train_loss_from_step": resumed_at + 1}
    whole = (total + loss_since_resume * (global_step - resumed_at)) / global_step
    return {"train_loss": whole, "train_loss_since_resume": loss_since_resume}


def run_step(failed: list[dict[str, str]], name: str, function: Callable, *args, **kwargs):
    """``function(*args, **kwargs)``; a failure is logged and appended to ``failed`` instead of ending the run."""
    try:
        return function(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - any failure after training must not lose the trained model
        message = " ".join(str(err).split()) or type(err).__name__
        logger.warning("The %s failed after training (%s: %s); the run goes on without it", name,
                       type(err).__name__, message)
        failed.append({"step": name, "error": f"{type(err).__name__}: {message}"})
        return None
