"""The handler the exec wrapper (``AWS_LAMBDA_EXEC_WRAPPER=/opt/lambda-memory-profiler``) points
the runtime at: the function's own handler (``LMP_ORIGINAL_HANDLER``) with ``@memory_profile``.

The original handler is resolved when the runtime imports this module, that is when the runtime
would have imported it without the wrapper, and with the runtime's own ``_get_handler``: a bad
handler string, an import error, a syntax error or a missing attribute raise the runtime's own
fault (``Runtime.MalformedHandlerName``, ``Runtime.ImportModuleError``,
``Runtime.UserCodeSyntaxError``, ``Runtime.HandlerNotFound``) with the same message, and the
runtime reports it to the Runtime API exactly as without the wrapper. A handler already decorated
with ``@memory_profile`` is handed over as it is (measured once).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable

from ._decorator import memory_profile

ORIGINAL_HANDLER_ENV = "LMP_ORIGINAL_HANDLER"


def _runtime_get_handler() -> Callable[[str], Any] | None:
    """The running Python runtime's handler loader: awslambdaric's (also what Lambda's managed
    Python runtimes run), or the one of a runtime whose bootstrap script is ``__main__``."""
    try:
        from awslambdaric.bootstrap import _get_handler  # type: ignore[import-not-found]

        return _get_handler  # type: ignore[no-any-return]
    except Exception:
        pass
    main = sys.modules.get("__main__")
    get = getattr(main, "_get_handler", None)
    return get if callable(get) else None


def _own_get_handler(handler: str) -> Any:
    """The runtime's rules without its fault type: `module.sub.func`, `pkg/sub/app.func`."""
    modname, fname = handler.rsplit(".", 1)  # ValueError: malformed
    module = importlib.import_module(modname.replace("/", "."))  # ImportError, SyntaxError
    return getattr(module, fname)  # AttributeError: not found


def load(handler: str) -> Any:
    """The original handler, measured by ``memory_profile`` (once)."""
    get = _runtime_get_handler() or _own_get_handler
    fn = get(handler)
    if not callable(fn) or getattr(fn, "__lmp_options__", None) is not None:
        # Not a function (the runtime reports calling it as it would), or already measured.
        return fn
    return memory_profile(fn)


def _original() -> str:
    name = os.environ.get(ORIGINAL_HANDLER_ENV, "")
    if not name:
        # Imported without the wrapper: the runtime reports this as an import error.
        raise ImportError(f"{ORIGINAL_HANDLER_ENV} is not set (set by /opt/lambda-memory-profiler)")
    return name


handler = load(_original())
