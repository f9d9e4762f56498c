"""Keep the garbage collector's full passes off the request path.

A started service holds ~120,000 long-lived objects (descriptors, SQLAlchemy and gRPC
machinery, compiled plans). CPython's full collection walks all of them: ~60 ms on this
project's 2-core machine, a stall that lands on whichever requests are in flight and shows up
as their p99. They never become garbage, so once the service is started they are moved to the
permanent generation (`gc.freeze`) and later passes walk only what requests allocate.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect once, then exempt everything that survived start-up from future collections."""
    gc.collect()
    gc.freeze()
