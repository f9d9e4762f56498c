"""What the rendered overlays promise each process of the service catalogue.

The catalogue (accrue.embedded.stack) and the services' own settings classes are the truth; the
manifests are checked against them, and the settings are loaded from the exact environment a pod
would start with, so a misspelt variable or a wrong prefix fails here rather than in a cluster.
"""

from __future__ import annotations

import pytest

from accrue.contracts import PUBLIC_SERVICES
from accrue.embedded.stack import GATEWAY, SERVICE_NAMES

OVERLAYS = ("local", "production")
# From the catalogue, so a service added there is checked here before it is deployed.
SERVICES = SERVICE_NAMES
PROCESSES = (*SERVICES, GATEWAY.name)
# Stand-ins for the production Secret, which is created outside the repository.
PRODUCTION_SECRET = {
    "ACCRUE_DATABASE_URL": "postgresql://accrue:secret@db.example.internal:5432/accrue",
    "ACCRUE_NATS_URL": "nats://nats:4222",
}
SECRET_KEYS = frozenset(PRODUCTION_SECRET)
APP_UID = 10001  # the Dockerfile's USER


def main_container(deployment: dict) -> dict:
    spec = deployment["spec"]["template"]["spec"]
    [container] = [c for c in spec["containers"] if c["name"] == deployment["metadata"]["name"]]
    return container


def named_port(container: dict, port: int | str) -> int:
    """A probe or Service port as a number (it may name a container port)."""
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", PROCESSES)
def test_every_process_has_a_deployment_and_a_service_that_selects_it(
    overlay: str, name: str, rendered, processes
) -> None:
    r = rendered[overlay]
    deployment = r.get("Deployment", name)
    service = r.get("Service", name)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert selects(service["spec"]["selector"], pod_labels)
    # No other Deployment's pods may fall under this Service.
    others = [d for d in r.all("Deployment") if d is not deployment]
    assert not [
        d for d in others if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
    ]

    process = processes[name]
    expected = process.grpc_port if process.grpc_port is not None else process.metrics_port
    [port] = service["spec"]["ports"]
    assert port["port"] == expected
    assert named_port(main_container(deployment), port["targetPort"]) == expected
    assert main_container(deployment)["image"].split(":")[0].endswith(f"accrue/{name}")


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", SERVICES)
def test_services_are_probed_with_grpc_health_on_their_grpc_port(
    overlay: str, name: str, rendered, processes
) -> None:
    container = main_container(rendered[overlay].get("Deployment", name))
    expected = {"grpc": processes[name].grpc_port, "metrics": processes[name].metrics_port}
    probed = processes[name].grpc_port
    if overlay == "production":
        # Mutual TLS on the gRPC port, which the kubelet's gRPC probe cannot speak: health alone
        # answers in plaintext on the health port the service is told to open.
        probed = expected["health"] = processes[name].grpc_port + 10
        env = {v["name"]: v.get("value") for v in container["env"]}
        assert env[f"ACCRUE_{name.upper()}_GRPC_HEALTH_PORT"] == str(probed)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": probed}, probe
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_is_ready_on_readyz_and_alive_on_healthz(overlay: str, rendered, processes) -> None:
    container = main_container(rendered[overlay].get("Deployment", "gateway"))
    port = processes["gateway"].metrics_port
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        http = container[probe]["httpGet"]
        assert (http["path"], named_port(container, http["port"])) == (path, port), probe


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", SERVICES)
def test_service_settings_load_from_the_pod_environment(
    overlay: str, name: str, rendered, processes, isolated_environ
) -> None:
    r = rendered[overlay]
    container = main_container(r.get("Deployment", name))
    isolated_environ(r.env_of(container, PRODUCTION_SECRET))
    process = processes[name]
    settings = process.settings()  # raises if a required value is missing or malformed

    # Bound to the pod IP (the default, 127.0.0.1, is unreachable for probes, Services, Prometheus).
    assert (settings.grpc_host, settings.grpc_port) == ("0.0.0.0", process.grpc_port)
    assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", process.metrics_port)
    assert settings.database_url
    assert settings.nats_url
    if "masterdata_address" in process.settings.model_fields:
        host, _, port = settings.masterdata_address.rpartition(":")
        masterdata = r.get("Service", host)
        assert masterdata["spec"]["ports"][0]["port"] == int(port) == processes["masterdata"].grpc_port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_settings_load_from_the_pod_environment_with_every_public_backend(
    overlay: str, rendered, processes, isolated_environ
) -> None:
    r = rendered[overlay]
    isolated_environ(r.env_of(main_container(r.get("Deployment", "gateway"))))
    settings = processes["gateway"].settings()
    assert (settings.host, settings.port) == ("0.0.0.0", processes["gateway"].metrics_port)

    assert set(settings.backends) == set(PUBLIC_SERVICES)
    by_grpc_service = {p.grpc_service: p for p in processes.values() if p.grpc_service}
    for grpc_service, address in settings.backends.items():
        host, _, port = address.rpartition(":")
        process = by_grpc_service[grpc_service]
        service = r.get("Service", host)
        # The Service answers on the service's gRPC port and in front of that service's pods.
        assert service["spec"]["ports"][0]["port"] == int(port) == process.grpc_port
        pods = r.get("Deployment", process.name)["spec"]["template"]["metadata"]["labels"]
        assert selects(service["spec"]["selector"], pods)


def _names_read_by(process) -> set[str]:
    """Every ACCRUE_* variable the process's settings class reads."""
    fields = set(process.settings.model_fields)
    names = {f"{process.env_prefix}{f}".upper() for f in fields}
    if process.name == "gateway":
        # Only the stack-wide logging/tracing values fall back to ACCRUE_<FIELD> for the gateway.
        from accrue.services.gateway.settings import _SHARED

        names |= {f"ACCRUE_{f}".upper() for f in _SHARED}
    else:
        names |= {f"ACCRUE_{f}".upper() for f in fields}  # ServiceSettings' stack-wide fallback
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", PROCESSES)
def test_every_variable_set_on_a_container_is_one_its_settings_read(
    overlay: str, name: str, rendered, processes
) -> None:
    # The settings ignore unknown variables, so a typo would otherwise be silently dropped.
    deployment = rendered[overlay].get("Deployment", name)
    for container in (
        *deployment["spec"]["template"]["spec"].get("initContainers", []),
        main_container(deployment),
    ):
        unread = {v["name"] for v in container.get("env", [])} - _names_read_by(processes[name])
        assert not unread, f"{container['name']} sets variables nothing reads: {unread}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_shared_config_and_secret_key_is_read_by_some_process(
    overlay: str, rendered, processes
) -> None:
    config = rendered[overlay].generated("ConfigMap", "accrue-config")
    assert config is not None
    read = set().union(*(_names_read_by(p) for p in processes.values()))
    assert not set(config["data"]) - read
    assert read >= SECRET_KEYS


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", SERVICES)
def test_each_pod_migrates_in_an_init_container_from_its_own_image(overlay: str, name: str, rendered) -> None:
    deployment = rendered[overlay].get("Deployment", name)
    [migrate] = deployment["spec"]["template"]["spec"]["initContainers"]
    assert migrate["args"] == ["migrate"]
    # No command: the image's entrypoint (python -m accrue.services.<name>) takes the argument.
    assert "command" not in migrate
    assert migrate["image"] == main_container(deployment)["image"]
    assert migrate["envFrom"] == main_container(deployment)["envFrom"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_gets_no_database_or_nats_credentials(overlay: str, rendered) -> None:
    deployment = rendered[overlay].get("Deployment", "gateway")
    assert "initContainers" not in deployment["spec"]["template"]["spec"]
    assert not [s for s in main_container(deployment).get("envFrom", []) if "secretRef" in s]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", PROCESSES)
def test_prometheus_scrapes_each_pod_on_its_metrics_port(
    overlay: str, name: str, rendered, processes
) -> None:
    deployment = rendered[overlay].get("Deployment", name)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == processes[name].metrics_port
    assert processes[name].metrics_port in {p["containerPort"] for p in main_container(deployment)["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", PROCESSES)
def test_pods_run_unprivileged_with_bounded_resources_and_no_service_links(
    overlay: str, name: str, rendered
) -> None:
    spec = rendered[overlay].get("Deployment", name)["spec"]["template"]["spec"]
    # Service links would add <NAME>_PORT=tcp://... variables; one named accrue-* would collide
    # with the ACCRUE_* settings.
    assert spec["enableServiceLinks"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == APP_UID
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
        assert "memory" in resources["limits"], container["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_service_name_would_turn_into_an_accrue_variable(overlay: str, rendered) -> None:
    # Even with service links off in our pods, keep Service names out of the ACCRUE_ namespace.
    assert not [
        s["metadata"]["name"]
        for s in rendered[overlay].all("Service")
        if s["metadata"]["name"].startswith("accrue")
    ]


def _stream_replicas(r) -> dict[str, int]:
    data = r.generated("ConfigMap", "accrue-config")["data"]
    return {name: int(data[f"ACCRUE_{name.upper()}_STREAM_REPLICAS"]) for name in SERVICES}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_all_services_ask_for_the_same_stream_replicas_and_no_more_than_nats_servers(
    overlay: str, rendered
) -> None:
    # Every service creates-or-updates the same streams at start: different counts would have
    # them rewrite each other's stream config, and R3 on fewer than three servers cannot be placed.
    r = rendered[overlay]
    replicas = set(_stream_replicas(r).values())
    assert len(replicas) == 1
    assert replicas.pop() <= r.get("StatefulSet", "nats")["spec"]["replicas"]


def test_production_runs_r3_streams_on_a_three_server_cluster(rendered) -> None:
    r = rendered["production"]
    assert set(_stream_replicas(r).values()) == {3}
    assert r.get("StatefulSet", "nats")["spec"]["replicas"] == 3


def test_production_keeps_secrets_out_of_the_repository_and_pins_images_to_a_registry(rendered) -> None:
    r = rendered["production"]
    assert r.all("Secret") == []
    assert not [o for o in r.all("StatefulSet") if o["metadata"]["name"] == "postgres"]
    for name in PROCESSES:
        image = main_container(r.get("Deployment", name))["image"]
        registry, _, rest = image.partition("/")
        # A bare accrue/<name> would be looked up on Docker Hub, where anyone may own it.
        assert "." in registry, image
        assert rest.startswith(f"accrue/{name}:"), image


@pytest.mark.parametrize("name", ["gateway", "timekeeping"])
def test_production_autoscales_the_gateway_and_timekeeping(name: str, rendered) -> None:
    r = rendered["production"]
    hpa = r.get("HorizontalPodAutoscaler", name)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", name)
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    # A replica count in the Deployment would reset the HPA's scale on every apply.
    assert "replicas" not in r.get("Deployment", name)["spec"]
    # CPU utilisation is measured against the request.
    assert "cpu" in main_container(r.get("Deployment", name))["resources"]["requests"]


def test_the_local_overlay_runs_one_of_everything_with_its_own_postgres(rendered) -> None:
    r = rendered["local"]
    for workload in [*r.all("Deployment"), *r.all("StatefulSet")]:
        assert workload["spec"]["replicas"] == 1, workload["metadata"]["name"]
    secret = r.generated("Secret", "accrue-secrets")
    assert secret is not None
    assert set(secret["data"]) == SECRET_KEYS
    env = r.env_of(main_container(r.get("Deployment", "billing")))
    postgres = r.get("Service", "postgres")
    assert (
        f"@{postgres['metadata']['name']}:{postgres['spec']['ports'][0]['port']}/"
        in env["ACCRUE_DATABASE_URL"]
    )
    assert env["ACCRUE_NATS_URL"] == "nats://nats:4222"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_clients_reach_nats_through_its_client_service(overlay: str, rendered) -> None:
    r = rendered[overlay]
    service = r.get("Service", "nats")
    assert service["spec"]["ports"][0]["port"] == 4222
    pods = r.get("StatefulSet", "nats")["spec"]["template"]["metadata"]["labels"]
    assert selects(service["spec"]["selector"], pods)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_disruption_budget_keeps_gateway_pods_up_during_drains(overlay: str, rendered) -> None:
    r = rendered[overlay]
    pdb = r.get("PodDisruptionBudget", "gateway")
    pods = r.get("Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], pods)
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", PROCESSES)
def test_termination_leaves_time_for_endpoint_removal_and_the_drain(
    overlay: str, name: str, rendered, processes, isolated_environ
) -> None:
    r = rendered[overlay]
    deployment = r.get("Deployment", name)
    container = main_container(deployment)
    isolated_environ(r.env_of(container, PRODUCTION_SECRET))
    drain = processes[name].settings().shutdown_grace_seconds
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    # Past the grace period the kubelet sends SIGKILL, cutting the drain (and spans) short.
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert int(command[1]) + drain < grace
