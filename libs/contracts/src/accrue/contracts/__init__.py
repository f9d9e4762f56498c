"""Index of the generated contracts.

The generated modules live beside this package (`accrue.<domain>.v1.*_pb2`) and are never
edited by hand: `make proto` regenerates them from proto/, and `make check` fails if they
differ. `descriptors.binpb` is a FileDescriptorSet of every contract with source comments, from
which the gateway builds its routes and OpenAPI document.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from google.protobuf import descriptor_pb2

# The gRPC services the gateway exposes, by full name.
PUBLIC_SERVICES: tuple[str, ...] = (
    "accrue.masterdata.v1.MasterDataService",
    "accrue.timekeeping.v1.TimekeepingService",
    "accrue.billing.v1.BillingService",
    "accrue.forecasting.v1.ForecastingService",
    "accrue.observability.v1.ObservabilityService",
)


@cache
def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Every contract file (imports included) with its comments."""
    data = resources.files(__package__).joinpath("descriptors.binpb").read_bytes()
    return descriptor_pb2.FileDescriptorSet.FromString(data)
