"""The package's shape: imports point one way, nobody imports another module's private names,
modules stay small, and the generated frontend constants match the Python side."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "featmon_widget"

# What each package may import from the others. The monitor is the one facade that knows every
# other package; everything below it calls back up through a Protocol (hooks.Recorder,
# snapshot.SnapshotSource, widget.MonitorControls). Top-level modules (featmon_widget.types,
# .checks, ...) belong to no layer: every package may use them.
ALLOWED = {
    "sae": set(),
    "hooks": set(),
    "snapshot": set(),
    "live": {"snapshot"},
    "widget": {"live", "snapshot"},
    "serve": {"live", "snapshot", "widget"},  # the web stack; talks to a monitor by duck typing
    "monitor": {"sae", "hooks", "snapshot", "live", "widget", "serve"},
}
# Modules longer than this must say in their docstring why they are not split.
MAX_LINES = 400
# The facade owns its components and delegates each operation to one of them: one short method
# per operation, no logic of its own (no branches or loops in a public method).
FACADE_MAX_LINES = 320
FACADE_METHOD_MAX_LINES = 20
FACADE_PUBLIC_MAX_STATEMENTS = 8
LOGIC = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.Match, ast.IfExp, ast.ListComp,
         ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(module imported, name imported) for every import in the file, at any depth."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            out += [(base, alias.name) for alias in node.names]
    return out


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for name, path in mods.items():
        for target, imported in _imports(name, path):
            full = f"{target}.{imported}" if imported else target
            module = full if full in mods else target
            while module not in mods and "." in module:
                module = module.rsplit(".", 1)[0]
            if module not in mods or module == name or name.startswith(module + "."):
                continue
            edges[name].add(module)
            if imported and imported.startswith("_") and not imported.startswith("__"):
                private.append(f"{name} imports {imported} from {module}")
    return edges, private


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_no_import_cycles():
    edges, _ = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [])


def test_no_private_names_imported_across_modules():
    _, private = _graph()
    assert private == []


def test_packages_import_only_the_layers_they_may():
    edges, _ = _graph()
    wrong = [f"{a} -> {b}" for a, targets in edges.items() for b in targets
             if _layer(a) and _layer(b) and _layer(a) != _layer(b)
             and _layer(b) not in ALLOWED[_layer(a)]]
    assert wrong == []


def _facade() -> ast.ClassDef:
    facade = PACKAGE / "monitor" / "feature_monitor.py"
    assert len(facade.read_text().splitlines()) <= FACADE_MAX_LINES
    (cls,) = [n for n in ast.parse(facade.read_text()).body if isinstance(n, ast.ClassDef)]
    return cls


def _statements(method: ast.FunctionDef) -> list[ast.stmt]:
    """Every statement in `method` at any depth, its docstring left out."""
    body = method.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return [s for top in body for s in ast.walk(top) if isinstance(s, ast.stmt)]


def test_modules_stay_small():
    long = {}
    for name, path in _modules().items():
        lines = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and "not split" not in doc:
            long[name] = lines
    assert long == {}


def test_the_monitor_is_a_facade_that_owns_its_components():
    from featmon_widget import FeatureMonitor

    assert FeatureMonitor.__bases__ == (object,)  # composition: no mixins to borrow state
    cls = _facade()
    assert cls.bases == [] and cls.keywords == []
    methods = [n for n in cls.body if isinstance(n, ast.FunctionDef)]
    # Bodies only: the constructor's signature lists every setting, which is not logic.
    long_methods = {n.name: n.end_lineno - n.body[0].lineno + 1 for n in methods
                    if n.end_lineno - n.body[0].lineno + 1 > FACADE_METHOD_MAX_LINES}
    assert long_methods == {}


def test_the_facade_has_no_logic_of_its_own():
    """Each public method delegates in a few statements; validation, branches and loops live in
    the component that answers the operation."""
    body = _facade().body
    public = [n for n in body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    # Attributes that live on a component are one `Delegated(...)` line each.
    delegated = [n for n in body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
                 and getattr(n.value.func, "id", None) == "Delegated"]
    assert len(public) + len(delegated) > 40
    long = {n.name: len(_statements(n)) for n in public
            if len(_statements(n)) > FACADE_PUBLIC_MAX_STATEMENTS}
    assert long == {}
    branching = {n.name: type(node).__name__ for n in public for node in ast.walk(n)
                 if isinstance(node, LOGIC)}
    assert branching == {}


def test_generated_frontend_constants_are_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "generate_protocol.py"),
                             "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_test_modules_have_unique_names():
    # The test folders are not packages, so pytest imports each test file by its base name: two
    # files with one name in different folders stop the whole collection.
    names: dict[str, list[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}
