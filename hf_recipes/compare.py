"""``hf-recipes compare``: the settings and metrics of finished runs side by side, and their loss curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from hf_recipes.errors import RecipeError
from hf_recipes.run_folder import RECIPE_FILE, read_json
from hf_recipes.report import key_metrics, loss_points, markdown_table

# Settings shown in the table, in this order, from recipe.json (trainer_state.json for runs that predate them).
SETTINGS = ("model", "dataset", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
            "processes", "num_train_epochs", "max_steps", "precision", "seed")


def load_run(folder: Path) -> dict[str, Any]:
    """A finished run's recipe.json, trainer_state.json and all_results.json (or its *_results.json files)."""
    if not folder.is_dir():
        raise RecipeError(f"{folder} is not a folder")
    for name in (RECIPE_FILE, "trainer_state.json"):
        if not (folder / name).is_file():
            raise RecipeError(f"{folder} is not a finished hf-recipes run (no {name}); give the output_dir of a "
                              "run that completed")
    results = folder / "all_results.json"
    metrics: dict[str, Any] = {}
    for path in [results] if results.is_file() else sorted(folder.glob("*_results.json")):
        metrics.update(read_json(path, "results file"))
    return {"recipe": read_json(folder / RECIPE_FILE, "run file"),
            "state": read_json(folder / "trainer_state.json", "trainer state"), "metrics": metrics}


def comparison_rows(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, run in runs.items():
        settings = run["recipe"].get("settings", {})
        state = run["state"]
        fallback = {"per_device_train_batch_size": state.get("train_batch_size"),
                    "num_train_epochs": state.get("num_train_epochs"), "max_steps": state.get("max_steps")}
        row = {"run": name, "recipe": run["recipe"].get("recipe", "")}
        row.update({key: settings.get(key, fallback.get(key, "")) for key in SETTINGS})
        row["steps"] = state.get("global_step", "")
        row.update({k: v for k, v in key_metrics(run["metrics"]).items() if k.startswith(("eval_", "test_"))})
        rows.append(row)
    return rows


def plot_runs(runs: dict[str, dict[str, Any]], path: Path) -> None:
    """Training loss (solid) and eval loss (dashed, dots) against step, one colour per run."""
    import matplotlib.pyplot as plt  # after hf_recipes.report, which chose the file-only backend

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for index, (name, run) in enumerate(runs.items()):
        colour = f"C{index % 10}"
        train, evals = loss_points(run["state"].get("log_history", []))
        if train:
            axes.plot(*zip(*train), color=colour, label=f"{name} train")
        if evals:
            axes.plot(*zip(*evals), color=colour, linestyle="--", marker="o", label=f"{name} eval")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run_names(folders: Sequence[Path]) -> list[str]:
    """Each folder's name, or its path where two runs share a name."""
    names = [f.name for f in folders]
    return [f.name if names.count(f.name) == 1 else str(f) for f in folders]


def compare_runs(run_dirs: Sequence[str], output: str | Path) -> list[dict[str, Any]]:
    """Print one markdown table of the runs' settings and metrics and write their loss curves to ``output``."""
    folders = [Path(d) for d in run_dirs]
    runs = {name: load_run(folder) for name, folder in zip(run_names(folders), folders)}  # all checked first
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise RecipeError(f"--output {output} must be a .png file")
    rows = comparison_rows(runs)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    print(markdown_table(rows, columns))
    plot_runs(runs, output)
    print(f"\nloss curves: {output}")
    return rows
