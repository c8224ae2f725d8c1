"""The architecture you can see from the folder names: layers, who may import what, the plugin API."""

from __future__ import annotations

import ast
import inspect
import os
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from nodes import contract, registry

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["http_api", "storage", "graph_runtime", "nodes"]  # each may import only those to its right
DATABASE_MODULES = {"sqlalchemy", "sqlmodel", "aiosqlite", "asyncpg"}
WEB_MODULES = {"aiohttp.web", "aiohttp_cors"}


def lint_imports_command() -> list[str]:
    script = Path(sys.executable).parent / "lint-imports"
    if script.exists():
        return [str(script), "--no-cache"]
    program = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    return [sys.executable, "-c", program, "--no-cache"]


def source_files() -> list[Path]:
    return sorted(path for package in LAYERS for path in (ROOT / package).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, plus ``aiohttp.web*`` reached as an attribute of ``aiohttp``."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "aiohttp"
              and node.attr.startswith("web")):
            modules.add(f"aiohttp.{node.attr}")
    return modules


def is_under(module: str, prefixes: set[str]) -> bool:
    """``module`` is one of ``prefixes`` or inside one; ``aiohttp.web`` also covers ``aiohttp.web_*``."""
    for prefix in prefixes:
        if module == prefix or module.startswith(prefix + "."):
            return True
        if prefix == "aiohttp.web" and module.startswith("aiohttp.web_"):
            return True
    return False


def offenders(prefixes: set[str], allowed_package: str) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {module}"
            for path in source_files() if path.relative_to(ROOT).parts[0] != allowed_package
            for module in sorted(imported_modules(path)) if is_under(module, prefixes)]


def test_the_layers_contract_is_configured_as_documented() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert set(config["root_packages"]) == set(LAYERS)
    [layers] = [c for c in config["contracts"] if c["type"] == "layers"]
    assert layers["layers"] == LAYERS


def test_import_linter_keeps_the_layers_contract() -> None:
    result = subprocess.run(lint_imports_command(), cwd=ROOT, capture_output=True, text=True, timeout=50,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout, result.stdout


def test_import_linter_would_catch_an_upward_import(tmp_path: Path) -> None:
    # The same contract on a copy of the tree with one import pointing the wrong way.
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for package in LAYERS:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "nodes" / "upward.py").write_text("from http_api import settings\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(lint_imports_command(), cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=50, check=False)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and "nodes.upward" in result.stdout, result.stdout


def test_the_scan_sees_what_it_looks_for() -> None:
    # Guards the scanner itself: a test that finds nothing because it looks nowhere proves nothing.
    assert "sqlalchemy.ext.asyncio" in imported_modules(ROOT / "storage" / "repository_base.py")
    assert "aiohttp.web" in imported_modules(ROOT / "http_api" / "app.py")
    assert len(source_files()) > 20
    assert is_under("aiohttp.web_request", {"aiohttp.web"}) and not is_under("aiohttp.abc", {"aiohttp.web"})


def test_only_storage_imports_database_libraries() -> None:
    assert offenders(DATABASE_MODULES, "storage") == []


def test_only_storage_engine_knows_the_postgresql_driver() -> None:
    assert [f"{path.relative_to(ROOT)}" for path in source_files()
            if path != ROOT / "storage" / "engine.py" and any(is_under(m, {"asyncpg"}) for m in imported_modules(path))
            ] == []


def test_only_http_api_imports_the_web_framework() -> None:
    assert offenders(WEB_MODULES, "http_api") == []


# --- the plugin API (nodes/ is what third-party node types build on) ------------------------------


@pytest.mark.parametrize("name", ["NodeType", "RunContext", "CostModel", "RunPolicy", "validate_params",
                                  "split_policy"])
def test_the_contract_module_exports(name: str) -> None:
    assert hasattr(contract, name)
    assert getattr(contract, name).__module__ == "nodes.contract"


def test_node_type_declares_the_documented_members() -> None:
    for member in ("type", "description", "Params", "Output", "cost", "policy"):
        assert member in contract.NodeType.__annotations__ or hasattr(contract.NodeType, member), member
    assert inspect.iscoroutinefunction(contract.NodeType.run)
    assert list(inspect.signature(contract.NodeType.run).parameters) == ["self", "params", "ctx"]
    assert list(inspect.signature(contract.validate_params).parameters)[:2] == ["node_type", "params"]
    assert list(inspect.signature(contract.split_policy).parameters) == ["settings", "default"]
    context = contract.RunContext(task_id=1, node_id="n", flow_id="f")
    assert context.attempt == 1 and callable(context.report_usage) and callable(context.to_thread)
    assert not context.stop.is_set() and context.stop is context.stop  # one event per try, made when asked for


def test_registry_has_register_get_and_load_entry_points() -> None:
    for method in ("register", "get", "load_entry_points"):
        assert callable(getattr(registry.Registry, method)), method


def test_the_entry_point_group_is_graph_runtime_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert registry.ENTRY_POINT_GROUP == "graph_runtime.nodes"
    asked: list[str | None] = []

    def entry_points(*, group: str | None = None) -> list[metadata.EntryPoint]:
        asked.append(group)
        return []

    monkeypatch.setattr(registry.metadata, "entry_points", entry_points)
    registry.Registry().load_entry_points()
    assert asked == ["graph_runtime.nodes"]


# --- the Python client (graph_runtime_client/) stays light: aiohttp and the standard library -----

CLIENT = ROOT / "graph_runtime_client"


def client_offenders() -> list[str]:
    allowed = set(sys.stdlib_module_names) | {"aiohttp", "graph_runtime_client"}
    return [f"{path.relative_to(ROOT)} imports {module}"
            for path in sorted(CLIENT.rglob("*.py")) for module in sorted(imported_modules(path))
            if module.split(".")[0] not in allowed or is_under(module, WEB_MODULES)]


def test_the_client_imports_only_aiohttp_and_the_standard_library() -> None:
    assert client_offenders() == []


def test_the_client_scan_would_catch_server_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "aiohttp" in imported_modules(CLIENT / "transport.py")  # the scan reads the real files
    for package in LAYERS:
        (tmp_path / "graph_runtime_client").mkdir(exist_ok=True)
        (tmp_path / "graph_runtime_client" / "bad.py").write_text(f"from {package} import x\n", encoding="utf-8")
        monkeypatch.setattr(sys.modules[__name__], "CLIENT", tmp_path / "graph_runtime_client")
        monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
        assert f"graph_runtime_client/bad.py imports {package}" in client_offenders(), package


def test_importing_the_client_loads_no_server_package() -> None:
    program = ("import sys, graph_runtime_client; "
               "print(sorted({m.split('.')[0] for m in sys.modules} & {'http_api', 'storage', 'graph_runtime', "
               "'nodes', 'sqlalchemy', 'sqlmodel', 'pydantic', 'networkx', 'orjson'}))")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_client_is_packaged_with_the_server() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "graph_runtime_client*" in config["tool"]["setuptools"]["packages"]["find"]["include"]
