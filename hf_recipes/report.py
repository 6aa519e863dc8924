"""The human report every run ends with: ``report.md`` plus its PNG plots."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

logger = logging.getLogger("hf_recipes")


def format_value(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def format_change(before: float, after: float) -> str:
    """"12.3 -> 15.1 (+22.8%)"."""
    if not before or math.isnan(before) or math.isnan(after) or math.isinf(before):
        return f"{format_value(before)} -> {format_value(after)}"
    return f"{format_value(before)} -> {format_value(after)} ({(after - before) / before:+.1%})"


def per_split(counts: dict[str, Any]) -> str:
    """"train 3, validation 0, test 1"."""
    return ", ".join(f"{split} {count}" for split, count in counts.items())


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "_(none)_"
    columns = list(columns or rows[0].keys())

    def cell(value: Any) -> str:
        return format_value(value).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


# Read first: what the model achieved. Then per-class figures, sizes, and last how long it took.
HEADLINE = ("loss", "perplexity", "accuracy", "macro_f1", "exact_match", "rouge_l", "judge_score")
COST = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "total_flos", "epoch")


def metric_order(name: str) -> tuple[int, int]:
    if name in HEADLINE:
        return 0, HEADLINE.index(name)
    if name in COST:
        return 3, COST.index(name)
    return (2, 0) if name in ("samples", "real_token_share") else (1, 0)


# Measurements of the run rather than of the model (time, throughput, sizes): left out of cards and comparisons.
RUN_MEASUREMENTS = ("_runtime", "_per_second", "_preparation_time", "_samples", "_flos", "epoch")


def is_run_measurement(name: str) -> bool:
    return name.endswith(RUN_MEASUREMENTS)


def key_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The figures that describe a model: ``metrics`` without runtimes, throughputs and counts."""
    return {k: v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not is_run_measurement(k)}


def metrics_table(metrics_by_split: dict[str, dict[str, float]]) -> str:
    """One row per metric name, one column per split; the split prefix is dropped from the names. Rows go from
    what the model achieved (loss, perplexity, accuracy, ...) to per-class figures, sizes, and time last."""
    names: list[str] = []
    stripped: dict[str, dict[str, float]] = {}
    for split, metrics in metrics_by_split.items():
        stripped[split] = {k.removeprefix(f"{split}_"): v for k, v in metrics.items()}
        names += [k for k in stripped[split] if k not in names]
    names.sort(key=metric_order)  # stable: metrics of one rank keep the order they were logged in
    rows = [{"metric": n, **{s: stripped[s].get(n, "") for s in stripped}} for n in names]
    return markdown_table(rows, ["metric", *metrics_by_split])


def loss_points(log_history: list[dict[str, Any]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, train loss) and (step, eval loss) pairs of a Trainer log history."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    return train, evals


def plot_loss_curve(log_history: list[dict[str, Any]], path: Path, best_step: int | None = None) -> bool:
    """Train and eval loss against step, with the step of the lowest eval loss marked when given (overfitting).
    Returns False when there is nothing to plot."""
    train, evals = loss_points(log_history)
    if not train and not evals:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval loss")
    if best_step is not None:
        ax.axvline(best_step, color="grey", linestyle=":", label=f"lowest eval loss (step {best_step})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_confusion_matrix(y_true, y_pred, label_names: Sequence[str], path: Path, title: str) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(len(label_names))), display_labels=list(label_names), ax=ax, colorbar=False
    )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class Report:
    """Markdown sections collected during a run and written once at its end."""

    title: str
    sections: list[tuple[str, str]] = field(default_factory=list)

    def add(self, heading: str, body: str) -> None:
        self.sections.append((heading, body))

    def markdown(self) -> str:
        parts = [f"# {self.title}", ""]
        for heading, body in self.sections:
            parts += [f"## {heading}", "", body.rstrip(), ""]
        return "\n".join(parts)

    def write(self, output_dir: str | Path) -> Path:
        path = Path(output_dir) / "report.md"
        path.write_text(self.markdown(), encoding="utf-8")
        return path


def write_report(run, report: Report, metrics_by_split: dict[str, dict[str, float]]) -> None:
    """report.md of a finished run (``run`` a checks.RunState): metrics, the loss curve with the fit verdict, the
    checks' sections, the recipe's own, and the run's settings; steps that failed after training come first."""
    args, verdict = run.args, run.verdict
    output_dir = Path(args.training.output_dir)
    front = [("Metrics", metrics_table(metrics_by_split))]
    best_step = verdict.best_step if verdict and verdict.kind == "overfitting" else None
    # With load_best_model_at_end the final evaluation scores the best model again, at the last step; leave it
    # out so the curve shows the run as it went.
    curve = run.training_log if args.training.load_best_model_at_end else run.trainer.state.log_history
    if plot_loss_curve(curve, output_dir / "loss_curve.png", best_step):
        image = "![train and eval loss against step](loss_curve.png)"
        front.append(("Loss curve", image + (f"\n\n{verdict.message}" if verdict else "")))
    elif verdict:
        front.append(("Over- and underfitting", verdict.message))
    report.sections[:0] = front + run.checks.sections
    report.add("Run", run_summary(run, metrics_by_split["train"]))
    if run.failed:
        report.sections.insert(0, ("Steps that failed", "The model was trained and saved; these parts of the "
                                   "report are missing:\n\n" + markdown_table(run.failed)))
    path = report.write(output_dir)
    logger.info("Report written to %s", path)


def split_rows(datasets, split: str) -> str:
    from hf_recipes.data import rows_of  # datasets: not imported by the report helpers `compare` uses

    if split not in datasets:
        return "-"
    rows = rows_of(datasets[split])
    return "streamed" if rows is None else str(rows)


def run_summary(run, train_metrics: dict) -> str:
    from hf_recipes.model import describe_weights  # torch: not imported by the report helpers `compare` uses

    args, prepared, training = run.args, run.prepared, run.args.training
    model = args.model.model_name_or_path or f"{args.model.model_type} from scratch ({args.model.config_overrides})"
    data = args.data.train_file or args.data.dataset_name
    share = train_metrics.get("train_real_token_share")
    lines = [
        f"- model: `{model}` ({prepared.model.num_parameters() / 1e6:.1f}M parameters)",
        f"- data: `{data}`; {run.recipe.row_unit(args)} train/validation/test: " + " / ".join(
            split_rows(prepared.datasets, s) for s in ("train", "validation", "test")),
        f"- precision: weights {describe_weights(prepared.model)}; compute "
        f"{'bf16 autocast' if training.bf16 else 'fp16 autocast' if training.fp16 else 'as the weights'}; "
        f"batch {training.per_device_train_batch_size} x accumulation {training.gradient_accumulation_steps}"
        f" x {training.world_size} process(es); lr {training.learning_rate}; "
        f"schedule {getattr(training.lr_scheduler_type, 'value', training.lr_scheduler_type)}",
        f"- real (non-padding) share of computed training tokens: {'n/a' if share is None else f'{share:.1%}'}",
    ]
    if run.trainer.fused_head is not None:
        lines.append("- loss: fused LM-head cross-entropy, in chunks, for training and evaluation (`fused_lm_loss`)")
    lines += [f"- {key}: {value}" for key, value in prepared.facts.items()]
    return "\n".join(lines)
