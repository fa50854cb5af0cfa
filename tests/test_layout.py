"""The house plan, checked on the source (syntax trees, nothing imported): which modules may use TensorFlow,
that the library never imports Streamlit, that run-folder file names live in one module, and that no
function grows long."""

from __future__ import annotations

import ast
import functools

import pytest
from helpers import PROJECT_ROOT

#: The folders whose code the rules cover (the package, the app's pages, the scripts).
ROOTS = ("clothclf", "pages", "scripts")
#: The modules that may import TensorFlow (or Keras); everything else stays importable without it.
TF_MODULES = (
    "clothclf/data/pipeline.py",
    "clothclf/data/features.py",
    "clothclf/modeling/",
    "clothclf/training/",
    "clothclf/serving/export.py",
)
TF_PACKAGES = ("tensorflow", "keras")
#: Names of run-folder files; in the package only clothclf/runs.py spells them.
RUN_FILE_NAMES = {
    "run.json",
    "class_names.json",
    "config.json",
    "history.csv",
    "split.json",
    "model.keras",
    "model.tflite",
    "model_int8.tflite",
    "features.tflite",
    "head.npz",
    "trust.npz",
    "evaluations",
}
MAX_FUNCTION_LINES = 60


@functools.cache
def modules(*roots: str) -> dict[str, ast.Module]:
    """Path under the project (``clothclf/runs.py``) -> syntax tree, of every module under ``roots``."""
    return {
        path.relative_to(PROJECT_ROOT).as_posix(): ast.parse(path.read_text())
        for root in roots
        for path in sorted((PROJECT_ROOT / root).rglob("*.py"))
    }


def module_of(name: str) -> str:
    """``clothclf/data/pipeline.py`` -> ``clothclf.data.pipeline``."""
    return name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def imported(node: ast.AST) -> list[str]:
    """The absolute module names an import statement names (none for other nodes)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [node.module]
    return []


def modules_importing_tensorflow() -> set[str]:
    """The modules whose import imports TensorFlow: directly, or through another such module."""
    top_level = {
        module_of(name): {m for node in tree.body for m in imported(node)}
        for name, tree in modules("clothclf", "pages").items()
    }
    heavy: set[str] = set()
    while True:
        more = {
            module
            for module, imports in top_level.items()
            if any(m.split(".")[0] in TF_PACKAGES or m in heavy for m in imports)
        }
        if more <= heavy:
            return heavy
        heavy |= more


def test_only_the_training_side_imports_tensorflow():
    tf_modules = modules_importing_tensorflow()
    assert {"clothclf.data.pipeline", "clothclf.modeling.models", "clothclf.training.loop"} <= tf_modules
    assert (
        not {"clothclf.serving.classifier", "clothclf.app.jobs", "clothclf.cli", "pages.classify"}
        & tf_modules
    )
    offenders = []
    for name, tree in modules("clothclf", "pages").items():
        if name.startswith(TF_MODULES):
            continue
        for node in ast.walk(tree):  # anywhere, even inside a function
            offenders += [f"{name} imports {m}" for m in imported(node) if m.split(".")[0] in TF_PACKAGES]
        for node in tree.body:  # at import time: no module that imports TensorFlow either
            offenders += [f"{name} imports {m} when imported" for m in imported(node) if m in tf_modules]
    assert offenders == []


def test_the_library_never_imports_streamlit():
    spelled = [
        f"{name}:{node.lineno}"
        for name, tree in modules("clothclf").items()
        for node in ast.walk(tree)
        if any(m.split(".")[0] == "streamlit" for m in imported(node))
    ]
    assert spelled == []


def test_subpackages_import_nothing_when_imported():
    for name, tree in modules("clothclf").items():
        if name.count("/") > 1 and name.endswith("/__init__.py"):
            assert not [node for node in tree.body if imported(node)], name


def test_only_runs_knows_the_run_folder_file_names():
    spelled = [
        f"{name}:{node.lineno} {node.value!r}"
        for name, tree in modules(*ROOTS).items()
        if name != "clothclf/runs.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (node.value in RUN_FILE_NAMES or node.value.startswith(("metrics_", "predictions_")))
    ]
    assert spelled == []


@pytest.mark.parametrize("name", list(modules(*ROOTS)))
def test_no_function_is_longer_than_sixty_lines(name):
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(modules(*ROOTS)[name])
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_tests_share_their_helpers_instead_of_redefining_them():
    shared = {"PROJECT_ROOT", "SHARED_DATASET", "CLASSES", "make_image", "write_dataset", "tiny_config"}
    redefined = [
        f"{name}:{node.lineno}"
        for name, tree in modules("tests").items()
        if name != "tests/helpers.py"
        for node in tree.body
        if (isinstance(node, ast.Assign) and {getattr(t, "id", None) for t in node.targets} & shared)
        or (isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in shared)
        or any(m.split(".")[-1] == "conftest" for m in imported(node))
    ]
    assert redefined == []
