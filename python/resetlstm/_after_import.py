"""``after_import(name, callback)``: runs ``callback()`` once module ``name`` has been imported,
by whoever imports it: at once when it already is, else right after its import finishes.

``import resetlstm`` imports no framework, yet Keras must know resetlstm's layers before
``keras.models.load_model`` reads a file that holds them, and TensorFlow its op before
``tf.saved_model.load`` reads a graph that holds it. So the package registers both when (and
only if) the process imports Keras or TensorFlow, in either order of imports.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
import warnings

_LOCK = threading.Lock()
_PENDING: dict = {}  # module name -> callbacks waiting for its import


def after_import(name: str, callback) -> None:
    with _LOCK:
        waiting = name in _PENDING
        if name not in sys.modules:
            _PENDING.setdefault(name, []).append(callback)
            if not waiting:
                sys.meta_path.insert(0, _Watch(name))
            return
    _run(name, [callback])


def _run(name, callbacks):
    for callback in callbacks:
        try:
            callback()
        except Exception as error:  # never break the framework's own import
            warnings.warn(f"resetlstm: could not register with {name} after its import: "
                          f"{type(error).__name__}: {error}", RuntimeWarning, stacklevel=3)


class _Watch(importlib.abc.MetaPathFinder):
    """Finds module `name` as the other finders would, with a loader that runs the pending
    callbacks once the module has executed; then steps aside."""

    def __init__(self, name):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        with _LOCK:
            if self in sys.meta_path:
                sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _NotifyingLoader(spec.loader, fullname)
        return spec


class _NotifyingLoader(importlib.abc.Loader):
    """Delegates to the real loader; after exec_module, runs the callbacks for the module."""

    def __init__(self, loader, name):
        self._loader, self._name = loader, name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        try:
            self._loader.exec_module(module)
        except BaseException:  # the import failed: watch for the next attempt
            with _LOCK:
                sys.meta_path.insert(0, _Watch(self._name))
            raise
        module.__loader__ = module.__spec__.loader = self._loader  # as if never wrapped
        with _LOCK:
            callbacks = _PENDING.pop(self._name, [])
        _run(self._name, callbacks)

    def __getattr__(self, attribute):  # get_resource_reader, is_package, get_data, ...
        return getattr(self._loader, attribute)
