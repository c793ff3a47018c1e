"""Load ``waldur_api_client.models`` lazily: a model's module is imported when the agent first uses it.

The SDK's generated ``models/__init__.py`` imports every one of its ~3,000 model modules. That costs the agent
about 100 MB of resident memory and 2 s of start-up for the few dozen models it actually touches (measured:
127 MB peak RSS after importing the client with the eager package, see docs/benchmarks.md). The generated
endpoint modules import their models by module path (``from ...models.order_details import OrderDetails``),
which works unchanged against the lazy package; ``from waldur_api_client.models import X`` resolves ``X``
through the package's ``__getattr__`` (PEP 562) from the same name table the generated ``__init__`` holds.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from types import ModuleType

PACKAGE = "waldur_api_client.models"
_EXPORT = re.compile(r"^from \.(\w+) import (\w+)$", re.M)


def install_lazy_models() -> bool:
    """Register a lazy ``waldur_api_client.models`` package, unless that package is already imported.

    Returns whether the lazy package was installed. Safe to call more than once; a process that imported the
    eager package first (a test importing SDK models directly, say) keeps it.
    """
    importlib.import_module("waldur_api_client")
    if PACKAGE in sys.modules:
        return False
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None or spec.submodule_search_locations is None:
        return False  # an SDK layout this module does not know: the eager import still works
    with open(spec.origin, encoding="utf-8") as f:
        table = {name: module for module, name in _EXPORT.findall(f.read())}
    # module_from_spec gives the package its real __spec__, __path__ and __file__ without running __init__.
    package = importlib.util.module_from_spec(spec)

    def __getattr__(name: str) -> object:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{PACKAGE}.{module}"), name)
        setattr(package, name, value)
        return value

    package.__getattr__ = __getattr__  # type: ignore[attr-defined]
    package.__all__ = tuple(table)  # type: ignore[attr-defined]
    sys.modules[PACKAGE] = package
    parent: ModuleType = sys.modules["waldur_api_client"]
    parent.models = package  # type: ignore[attr-defined]
    return True
