"""The house plan, checked on the source (syntax trees, nothing imported): which modules may use TensorFlow,
that the library never imports Streamlit, that its modules import neither in a circle nor upwards
through its layers, that run-folder file names live in one module, and that no function grows long."""

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
#: The package's layers, lowest first: a module may import its own layer and the layers below, never one
#: above. A module belongs to the layer of the longest name listed that is it or contains it; a new
#: top-level module must be placed here. Within a layer, only circles are forbidden.
LAYERS = (
    # Everything may use these: the version, errors, run folders, settings, console text, NumPy maths
    # (softmax, temperature), the allocator, and the backbone registry the settings list (no TensorFlow).
    (
        "clothclf._version",
        "clothclf.errors",
        "clothclf.numerics",
        "clothclf.allocator",
        "clothclf.runs",
        "clothclf.config",
        "clothclf.console",
        "clothclf.modeling.backbones",
    ),
    ("clothclf.data",),
    ("clothclf.modeling",),
    ("clothclf.serving", "clothclf.evaluation"),
    # Training; with it the backbone-feature cache (it runs the model through serving's LiteRT export)
    # and the dataset audit (it trains heads on those features).
    ("clothclf.training", "clothclf.data.features", "clothclf.evaluation.data_issues"),
    # What people and programs call: the app's library, the HTTP API, the benchmarks.
    ("clothclf.app", "clothclf.api", "clothclf.benchmarks"),
    # Entry points: the command, ``python -m clothclf`` and the package's own facade (``clothclf``).
    ("clothclf.cli", "clothclf.__main__", "clothclf"),
)


@functools.cache
def modules(*roots: str) -> dict[str, ast.Module]:
    """Import path (``clothclf/runs.py``) -> syntax tree, of every module under ``roots`` (the package
    lives in ``src/``, the app's pages and the scripts at the project's top)."""
    bases = {root: PROJECT_ROOT / "src" if root == "clothclf" else PROJECT_ROOT for root in roots}
    return {
        path.relative_to(bases[root]).as_posix(): ast.parse(path.read_text())
        for root in roots
        for path in sorted((bases[root] / root).rglob("*.py"))
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


def imported_from(node: ast.AST, module: str, is_package: bool) -> list[tuple[str, str | None]]:
    """(module, name or None) for each thing an import statement in ``module`` imports (relative imports
    resolved); nothing for other nodes."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = module
    if node.level:
        parts = module.split(".")
        base = ".".join(parts[: len(parts) - node.level + (1 if is_package else 0)])
    source = ".".join(part for part in ((base if node.level else ""), node.module or "") if part)
    return [(source, alias.name) for alias in node.names]


def facade_exports(tree: ast.Module) -> dict[str, str]:
    """Name -> module of what a package's ``__init__`` imports at its top level and so re-exports."""
    return {
        alias.asname or alias.name: node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and not node.level
        for alias in node.names
    }


def import_graph(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Module -> the modules among ``trees`` (keys: dotted names) it imports anywhere, function bodies too.

    ``from package import thing`` is an import of the submodule ``package.thing`` if there is one, of the
    module the package re-exports ``thing`` from if it does (``from clothclf import __version__``: the
    version module), else of ``package`` itself.
    """
    packages = {name for name in trees if any(other.startswith(name + ".") for other in trees)}
    exports = {name: facade_exports(trees[name]) for name in packages}
    graph = {}
    for name, tree in trees.items():
        edges = set()
        for node in ast.walk(tree):
            for source, thing in imported_from(node, name, name in packages):
                home = exports.get(source, {}).get(thing)
                if f"{source}.{thing}" in trees:
                    edges.add(f"{source}.{thing}")
                else:
                    edges.add(home if home in trees else source)
        graph[name] = {edge for edge in edges if edge in trees and edge != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of ``graph`` as ``[a, b, ..., a]``, or ``[]`` if there is none."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = "open"
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = "done"
                stack.pop()
            elif state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = "open"
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return []


def layer_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int:
    """The index of ``module``'s layer: that of the longest listed name that is it or contains it."""
    matches = [
        (len(prefix), index)
        for index, prefixes in enumerate(layers)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    root = module.split(".")[0]  # the package's facade holds itself only, not every new module
    if not matches or max(matches)[0] == len(root) and module != root:
        raise AssertionError(f"{module}: no layer; place it in LAYERS in tests/test_layout.py")
    return max(matches)[1]


def upward_imports(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """Every import of a module in a higher layer than the importer's, as ``importer -> imported``."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target, layers) > layer_of(module, layers)
    )


def package_graph() -> dict[str, set[str]]:
    """The import graph of the ``clothclf`` package's modules."""
    return import_graph({module_of(name): tree for name, tree in modules("clothclf").items()})


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


def test_the_http_api_never_imports_tensorflow():
    tf_modules = modules_importing_tensorflow() | {
        module_of(name) for name in modules("clothclf") if name.startswith(TF_MODULES)
    }
    graph = package_graph()
    offenders = []
    for name, tree in modules("clothclf").items():
        if name.startswith("clothclf/api/"):  # anywhere, even inside a function
            offenders += [
                f"{name} imports {m}"
                for node in ast.walk(tree)
                for m in imported(node)
                if m.split(".")[0] in TF_PACKAGES
            ]
            offenders += [f"{name} imports {m}" for m in sorted(graph[module_of(name)] & tf_modules)]
    assert offenders == []


def test_no_import_circle_among_the_packages_modules():
    assert find_cycle(package_graph()) == []


def test_no_module_imports_a_layer_above_its_own():
    graph = package_graph()
    assert [layer_of(module) for module in graph]  # every module has a layer
    assert upward_imports(graph) == []


SYNTHETIC_PACKAGE = {
    "pkg": "from pkg.low import VALUE\n",
    "pkg.low": "import os\nVALUE = 1\n",
    "pkg.mid": "from pkg import VALUE\n",
    "pkg.high": "def late():\n    from pkg.mid import thing\n",
}
SYNTHETIC_LAYERS = (("pkg.low",), ("pkg.mid",), ("pkg.high", "pkg"))


def synthetic_graph(**changed: str) -> dict[str, set[str]]:
    """The import graph of the synthetic package, with some modules' source replaced (``pkg_low=...``)."""
    sources = {**SYNTHETIC_PACKAGE, **{name.replace("_", "."): text for name, text in changed.items()}}
    return import_graph({name: ast.parse(text) for name, text in sources.items()})


def test_the_graph_counts_imports_inside_functions_and_through_a_packages_re_exports():
    assert synthetic_graph() == {
        "pkg": {"pkg.low"},
        "pkg.low": set(),
        "pkg.mid": {"pkg.low"},
        "pkg.high": {"pkg.mid"},
    }
    assert find_cycle(synthetic_graph()) == []
    assert upward_imports(synthetic_graph(), SYNTHETIC_LAYERS) == []


def test_a_planted_circle_is_found():
    planted = synthetic_graph(pkg_low="def late():\n    import pkg.high\n")
    assert find_cycle(planted) == ["pkg.low", "pkg.high", "pkg.mid", "pkg.low"]
    assert find_cycle(synthetic_graph(pkg_mid="from pkg import VALUE\nfrom pkg import mid\n")) == []  # itself
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_a_planted_upward_import_is_found():
    planted = synthetic_graph(pkg_low="from pkg.mid import thing\n")
    assert upward_imports(planted, SYNTHETIC_LAYERS) == ["pkg.low -> pkg.mid"]
    facade = synthetic_graph(pkg_mid="from pkg import helper\n")  # defined by the package itself: top layer
    assert upward_imports(facade, SYNTHETIC_LAYERS) == ["pkg.mid -> pkg"]


def test_a_module_outside_every_layer_is_named():
    with pytest.raises(AssertionError, match="clothclf.newcomer: no layer"):
        layer_of("clothclf.newcomer")
    assert layer_of("clothclf.serving.anything_new") == layer_of("clothclf.evaluation.metrics")


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
