"""Per-invocation memory measurement for AWS Lambda Python handlers.

``@memory_profile`` measures every invocation cheaply (duration, gc, peak RSS, heap blocks),
traces a sample of invocations with ``tracemalloc`` (peak, retained memory, and the lines of the
function's own code that allocated it) and hands each record to the lambda-memory-profiler
extension, or prints an Embedded Metric Format line when the extension is not there.
"""

from ._decorator import memory_profile, stats
from ._version import __version__

__all__ = ["memory_profile", "stats", "__version__"]
