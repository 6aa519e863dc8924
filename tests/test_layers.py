"""The package's modules form layers: a module imports only modules of its own layer or the layers below it, and no
import chain leads back to where it started. Every import counts, those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import hf_recipes

PACKAGE = Path(hf_recipes.__file__).parent

# Lowest first. A new module joins the layer whose modules it serves.
LAYERS = {
    "foundation": {"hf_recipes", "errors", "files", "upstream", "collators", "demo_tokenizer", "chat", "prompts",
                   "judge", "search_space", "metric_modules", "samples"},
    "settings": {"aliases", "config_file", "help", "config"},
    "run folder": {"run_folder"},
    "models and data": {"model", "precision", "metrics", "fused_loss", "report", "data", "adapters", "generation",
                        "hub", "predict", "compare"},
    "training": {"trainer", "checks", "forgetting", "baselines", "model_card", "model_kinds"},
    "run lifecycle": {"run", "recipe"},
    "recipes": {"recipes"},
    "commands": {"flag_index", "sweep", "cli", "__main__"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package's own modules that ``path`` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in modules and target != name}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: package_imports(path, name, set(paths)) for name, path in paths.items()}


def layer_of(module: str) -> int:
    """A module's layer: its own entry, else its top-level module's (``recipes.lyrics`` is in ``recipes``)."""
    short = module.removeprefix("hf_recipes.") if module != "hf_recipes" else module
    for candidate in (short, short.split(".")[0]):
        for index, members in enumerate(LAYERS.values()):
            if candidate in members:
                return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import cycle through each strongly connected group of modules (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_a_layer_and_imports_none_above_its_own():
    graph = import_graph()
    upward = [f"{module} ({list(LAYERS)[layer_of(module)]}) imports {target} ({list(LAYERS)[layer_of(target)]})"
              for module, targets in sorted(graph.items()) for target in sorted(targets)
              if layer_of(target) > layer_of(module)]
    assert upward == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_checks_find_an_upward_import_and_a_cycle():
    graph = {"hf_recipes.errors": {"hf_recipes.cli"}, "hf_recipes.cli": {"hf_recipes.errors"}}
    assert layer_of("hf_recipes.errors") < layer_of("hf_recipes.cli")
    assert cycles(graph) == [["hf_recipes.cli", "hf_recipes.errors"]]
    source = PACKAGE / "recipes" / "lyrics.py"
    assert "hf_recipes.recipe" in package_imports(source, "hf_recipes.recipes.lyrics", set(import_graph()))


def test_each_built_in_recipe_is_one_level_below_the_contract_and_lists_its_own_checks():
    from hf_recipes import recipes
    from hf_recipes.recipe import Recipe

    for name in recipes.BUILT_IN:
        recipe_class = type(recipes.get(name))
        assert recipe_class.__mro__ == (recipe_class, Recipe, object)
        assert {"kind", "checks"} <= set(vars(recipe_class)), name


def test_the_tests_are_laid_out_like_the_package():
    """tests/test_<module>.py tests a module of that name; tests/recipes/test_<recipe>.py a recipe (or the registry
    and the toy recipe from another package); the rest are whole runs in tests/end_to_end."""
    tests = Path(__file__).parent
    modules = {path.stem for path in PACKAGE.glob("*.py")} | {"layers"}
    recipes = {path.stem for path in (PACKAGE / "recipes").glob("*.py")} | {"registry", "toy_recipe"}
    misplaced = [path.name for path in tests.glob("test_*.py") if path.stem.removeprefix("test_") not in modules]
    misplaced += [f"recipes/{path.name}" for path in (tests / "recipes").glob("test_*.py")
                  if path.stem.removeprefix("test_") not in recipes]
    assert not misplaced, f"name these after the module they test, or move them to tests/end_to_end: {misplaced}"
    assert {path.parent.name for path in tests.rglob("test_*.py")} == {"tests", "recipes", "end_to_end"}
