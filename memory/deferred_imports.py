"""Imports that sentence-transformers makes when it loads and that dense encoding never calls."""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

# Module -> names imported from it that are only ever called (never subclassed or used with
# isinstance), and who imports them. Deferring them keeps sklearn and scipy out of a process
# that only encodes: 627 -> 557 MB peak RSS for `threadswarm serve` with the model
# (bench/startup.py), and 0.8 s less CPU to start.
CALLED_ONLY: Mapping[str, frozenset[str]] = {
    # sentence_transformers.util.similarity: the manhattan similarity of sparse tensors
    "sklearn.metrics": frozenset({"pairwise_distances"}),
    # sentence_transformers.util.tensor: to_scipy_coo(), for sparse tensors
    "scipy.sparse": frozenset({"coo_matrix"}),
    # transformers.loss: the Hungarian matching of DETR-like models' training losses
    "scipy.optimize": frozenset({"linear_sum_assignment"}),
}


@contextlib.contextmanager
def deferred_imports(called_only: Mapping[str, frozenset[str]] = CALLED_ONLY) -> Iterator[None]:
    """Within the block, `from M import NAME` with NAME in called_only[M] binds a function that
    imports M at its first call. Any other use of M imports it at once, and ends the deferral
    of every module, so that a real import never sees a stand-in."""
    stand_ins: dict[str, types.ModuleType] = {}

    def end() -> None:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]

    def real(module_name: str) -> types.ModuleType:
        end()
        return importlib.import_module(module_name)

    for module_name, names in called_only.items():
        if module_name not in sys.modules:
            stand_ins[module_name] = _stand_in(module_name, names, real)
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        end()


def _stand_in(module_name: str, names: frozenset[str],
              real: Callable[[str], types.ModuleType]) -> types.ModuleType:
    module = types.ModuleType(module_name)
    module.__spec__ = importlib.machinery.ModuleSpec(module_name, None)

    def on_first_call(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(real(module_name), name)(*args, **kwargs)

        call.__name__ = call.__qualname__ = name
        call.__module__ = module_name
        return call

    def attribute(name: str) -> Any:
        if name.startswith("__"):  # the import system probing (__path__, ...): a plain module
            raise AttributeError(name)
        return on_first_call(name) if name in names else getattr(real(module_name), name)

    module.__getattr__ = attribute  # type: ignore[method-assign]
    return module
