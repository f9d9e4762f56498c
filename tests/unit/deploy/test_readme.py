"""deploy/README.md documents every setting and port the processes actually have.

The settings classes and the service catalogue are the truth; a setting added to a service
without a line in the operator's reference fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from accrue.embedded.stack import GATEWAY, SERVICE_NAMES

README = (Path(__file__).resolve().parents[3] / "deploy" / "README.md").read_text()


@pytest.mark.parametrize("name", [*SERVICE_NAMES, GATEWAY.name])
def test_every_setting_of_every_process_is_documented(name: str, processes) -> None:
    process = processes[name]
    undocumented = []
    for field in process.settings.model_fields:
        own = f"{process.env_prefix}{field}".upper()
        # Settings every gRPC service shares are documented once as ACCRUE_<NAME>_<SETTING>.
        shared = f"ACCRUE_<NAME>_{field.upper()}"
        if f"`{own}`" not in README and not (name != GATEWAY.name and f"`{shared}`" in README):
            undocumented.append(own)
    assert not undocumented, f"deploy/README.md does not mention {undocumented}"


@pytest.mark.parametrize("name", [*SERVICE_NAMES, GATEWAY.name])
def test_the_ports_table_matches_the_catalogue(name: str, processes) -> None:
    process = processes[name]
    [row] = [line for line in README.splitlines() if line.startswith(f"| {name} |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    numbers = [int(n) for n in re.findall(r"\b\d{4,5}\b", " ".join(cells[1:3]))]
    assert numbers == [p for p in (process.grpc_port, process.metrics_port) if p is not None]
