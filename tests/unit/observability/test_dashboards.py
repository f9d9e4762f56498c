"""deploy/grafana: the dashboards are what build_dashboards.py builds, and fit the provisioning."""

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import yaml

GRAFANA = Path(__file__).resolve().parents[3] / "deploy" / "grafana"


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_json_is_what_the_builder_makes() -> None:
    built = builder().build()
    committed = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert committed == built, "run .venv/bin/python deploy/grafana/build_dashboards.py"


def test_the_five_dashboards_exist_and_every_panel_queries_the_provisioned_datasource() -> None:
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "accrue.yml").read_text())[
        "datasources"
    ]
    dashboards = [json.loads(p.read_text()) for p in (GRAFANA / "dashboards").glob("*.json")]
    assert {d["uid"] for d in dashboards} == {
        "accrue-sla-overview",
        "accrue-billing-pipeline",
        "accrue-forecast",
        "accrue-service-health",
        "accrue-jetstream-backlog",
    }
    for d in dashboards:
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), d["uid"]
        for p in d["panels"]:
            assert p["targets"], (d["uid"], p["title"])
            assert all(t["datasource"]["uid"] == source["uid"] and t["expr"] for t in p["targets"])


def test_the_dashboard_provider_points_at_a_folder() -> None:
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "accrue.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
