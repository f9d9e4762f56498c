"""Transport security in the manifests: NATS users, mutual TLS in production, NetworkPolicies."""

from __future__ import annotations

import pytest

from accrue.embedded.stack import SERVICE_NAMES
from accrue.eventbus.permissions import DEPLOY_HEADER, GRANTS, password_variable, render_authorization

from .conftest import K8S

OVERLAYS = ("local", "production")


def _main(deployment: dict) -> dict:
    [container] = [
        c
        for c in deployment["spec"]["template"]["spec"]["containers"]
        if c["name"] == deployment["metadata"]["name"]
    ]
    return container


def test_the_deployed_nats_users_are_the_permission_table_rendered() -> None:
    # Regenerate with `python -m accrue.eventbus.permissions > deploy/k8s/nats/auth.conf`.
    assert (K8S / "nats" / "auth.conf").read_text() == DEPLOY_HEADER + render_authorization()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_and_nats_read_the_same_password_key(overlay: str, rendered) -> None:
    r = rendered[overlay]
    [nats] = r.get("StatefulSet", "nats")["spec"]["template"]["spec"]["containers"]
    server_refs = {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for v in nats["env"]
        if "valueFrom" in v and "secretKeyRef" in v["valueFrom"]
    }
    for name in SERVICE_NAMES:
        env = {v["name"]: v for v in _main(r.get("Deployment", name))["env"]}
        assert env[f"ACCRUE_{name.upper()}_NATS_USER"]["value"] == name
        ref = env[f"ACCRUE_{name.upper()}_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == server_refs[password_variable(name)]
        # Generated locally (a hash suffix), created outside the repository in production.
        assert (
            ref["name"].rsplit("-", 1)[0] if overlay == "local" else ref["name"]
        ) == "accrue-nats-credentials"
        assert ref["key"] == name
    assert set(GRANTS) == set(SERVICE_NAMES)


def test_the_gateway_has_no_nats_user(rendered) -> None:
    for overlay in OVERLAYS:
        env = _main(rendered[overlay].get("Deployment", "gateway")).get("env", [])
        assert not [v for v in env if "NATS" in v["name"]]


def test_production_turns_on_mutual_tls_with_each_process_its_own_certificate(rendered) -> None:
    r = rendered["production"]
    config = r.generated("ConfigMap", "accrue-config")
    assert config is not None
    data = config["data"]
    for setting in ("CERT_FILE", "KEY_FILE", "CA_FILE"):
        assert data[f"ACCRUE_GRPC_TLS_{setting}"].startswith("/etc/accrue/tls/")
        assert data[f"ACCRUE_NATS_TLS_{setting}"].startswith("/etc/accrue/tls/")
    certificates = {c["metadata"]["name"]: c for c in r.all("Certificate")}
    for name in (*SERVICE_NAMES, "gateway"):
        deployment = r.get("Deployment", name)
        [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == f"{name}-tls"
        assert {"name": "tls", "mountPath": "/etc/accrue/tls", "readOnly": True} in _main(deployment)[
            "volumeMounts"
        ]
        cert = certificates[f"{name}-tls"]["spec"]
        assert cert["secretName"] == f"{name}-tls"
        assert {"server auth", "client auth"} <= set(cert["usages"])
        assert name in cert["dnsNames"]  # the name clients dial (masterdata:50051)
    tls = r.generated("ConfigMap", "nats-config")["data"]["tls.conf"]  # type: ignore[index]
    assert "verify: true" in tls


def test_the_local_overlay_runs_plaintext(rendered) -> None:
    config = rendered["local"].generated("ConfigMap", "accrue-config")
    assert config is not None
    assert not [k for k in config["data"] if "TLS" in k]
    assert rendered["local"].all("NetworkPolicy") == []


def test_production_denies_by_default_and_allows_exactly_the_flows(rendered) -> None:
    r = rendered["production"]
    policies = {p["metadata"]["name"]: p["spec"] for p in r.all("NetworkPolicy")}
    deny = policies["default-deny"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    def callers(target: str) -> set[str]:
        grpc = next(p for p in r.get("Service", target)["spec"]["ports"] if p["name"] == "grpc")["port"]
        found = set()
        for spec in policies.values():
            if spec["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") != target:
                continue
            for rule in spec.get("ingress", []):
                if any(port["port"] == grpc for port in rule.get("ports", [])):
                    found |= {
                        f["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                        for f in rule.get("from", [])
                    }
        return found

    assert callers("masterdata") == {"gateway", "timekeeping", "billing"}
    assert callers("timekeeping") == {"gateway", "observability"}
    assert callers("billing") == {"gateway", "observability"}
    assert callers("forecasting") == {"gateway"}
    assert callers("observability") == {"gateway"}
    nats_clients = {
        f["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for rule in policies["nats"]["ingress"]
        if any(port["port"] == 4222 for port in rule["ports"])
        for f in rule["from"]
    }
    assert nats_clients == set(SERVICE_NAMES)  # not the gateway
