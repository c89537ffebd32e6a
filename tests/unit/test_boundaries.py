"""The architecture the tree shows, checked: a service imports only the core and itself, and
neither the core nor the settings import a service (STYLE.md, "one package per service")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "energy_tracker"
SERVICES = sorted(p.name for p in (PACKAGE / "services").iterdir() if (p / "__init__.py").exists())


def imported_modules(source: str, package: str) -> set[str]:
    """Every module `source` (a module of `package`) imports: at the top or inside a function,
    absolute or relative, and each imported name as a possible submodule."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def services_named(modules: set[str]) -> set[str]:
    """The services these modules belong to."""
    prefix = "energy_tracker.services."
    return {m[len(prefix) :].split(".")[0] for m in modules if m.startswith(prefix)}


def services_imported(path: Path) -> set[str]:
    """The services the module at `path` imports anything from."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    return services_named(imported_modules(path.read_text(), package))


def sources(under: Path) -> list[Path]:
    return sorted(under.rglob("*.py"))


def test_the_walk_sees_every_kind_of_import() -> None:
    # The checks below are only as good as this: one module with each form of import.
    source = (
        "import energy_tracker.services.alerts.store\n"
        "from energy_tracker.services.devices import store\n"
        "from ..users import schemas\n"
        "from . import live\n"
        "def later():\n"
        "    from energy_tracker.services.insights.api import router\n"
    )
    found = services_named(imported_modules(source, "energy_tracker.services.usage"))
    assert found == {"alerts", "devices", "users", "usage", "insights"}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_only_the_core_and_itself(service: str) -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(services_imported(path) - {service})
        for path in sources(PACKAGE / "services" / service)
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_the_core_imports_no_service() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(services_imported(path))
        for path in sources(PACKAGE / "core")
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_the_settings_import_no_service() -> None:
    assert services_imported(PACKAGE / "config.py") == set()
