"""A local read model of master data for the services that validate or price against it.

Timekeeping, billing and forecasting must not call master data once per entry. Each keeps its
own copy of the records it reads, in its own schema (`projection_table`), fed by the
`md.*.upserted` events (`subscription`). A record not there yet (the event is still on its
way) is read from master data over gRPC and stored (`MasterDataReader`). Versions (etags) keep
an older state from overwriting a newer one, whichever path delivers it first.
"""

from accrue.mdprojection.reader import MasterDataReader
from accrue.mdprojection.store import ProjectionStore, projection_table
from accrue.mdprojection.subscription import subscription

__all__ = ["MasterDataReader", "ProjectionStore", "projection_table", "subscription"]
