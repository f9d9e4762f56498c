"""Fixtures for the deploy tests: the repository's paths and the kustomize overlays, rendered.

The overlays are rendered by `render_kustomization` below, a small kustomize in Python, so the
tests need neither kustomize nor kubectl. It implements exactly the kustomization fields
deploy/k8s uses and refuses any other, so a new field cannot be silently ignored here;
test_kustomize_files.py checks it against `kubectl kustomize` where kubectl is installed.
(Test modules are imported in importlib mode, so they take what they need from fixtures.)
"""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("local", "production")

Obj = dict[str, Any]

SUPPORTED_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "namespace",
        "resources",
        "configMapGenerator",
        "secretGenerator",
        "patches",
        "replicas",
        "images",
    }
)
CLUSTER_SCOPED = frozenset({"Namespace"})
# Strategic-merge list keys, from the Kubernetes API's patchMergeKey markers (the ones used here).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}


class KustomizeError(Exception):
    """The kustomization asks for something that does not exist or is not supported."""


@dataclass
class _Resource:
    obj: Obj
    generated: bool = False  # from a generator: gets a content hash suffix at the end


@dataclass
class _Level:
    resources: list[_Resource] = field(default_factory=list)

    def find(self, kind: str, name: str) -> _Resource | None:
        for res in self.resources:
            if res.obj["kind"] == kind and res.obj["metadata"]["name"] == name:
                return res
        return None


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _build(directory: Path) -> _Level:
    kustomization_path = directory / "kustomization.yaml"
    if not kustomization_path.is_file():
        raise KustomizeError(f"{directory} has no kustomization.yaml")
    spec = yaml.safe_load(kustomization_path.read_text())
    unsupported = set(spec) - SUPPORTED_FIELDS
    if unsupported:
        raise KustomizeError(
            f"{kustomization_path}: fields this test resolver does not implement: {unsupported}"
        )

    level = _Level()
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            level.resources.extend(_build(path).resources)
        elif path.is_file():
            level.resources.extend(_Resource(doc) for doc in load_yaml_documents(path))
        else:
            raise KustomizeError(f"{kustomization_path}: resource {entry!r} does not exist")

    for kind, generators in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for generator in spec.get(generators, []):
            _generate(level, directory, kind, generator)

    for patch in spec.get("patches", []):
        _patch(level, directory, patch)
    for replicas in spec.get("replicas", []):
        _set_replicas(level, replicas)
    for image in spec.get("images", []):
        _set_image(level, image)
    if "namespace" in spec:
        for res in level.resources:
            if res.obj["kind"] not in CLUSTER_SCOPED:
                res.obj["metadata"]["namespace"] = spec["namespace"]
    return level


def _generate(level: _Level, directory: Path, kind: str, generator: Obj) -> None:
    data: dict[str, str] = {}
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    for entry in generator.get("files", []):
        key, _, path = entry.rpartition("=")
        file = directory / path
        if not file.is_file():
            raise KustomizeError(f"{directory}: generator file {path!r} does not exist")
        data[key or file.name] = file.read_text()
    behavior = generator.get("behavior", "create")
    existing = level.find(kind, generator["name"])
    if behavior == "create":
        if existing is not None:
            raise KustomizeError(f"{kind} {generator['name']} is generated twice")
        obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": generator["name"]}}
        level.resources.append(_Resource(obj, generated=True))
        existing = level.resources[-1]
    elif existing is None or not existing.generated:
        raise KustomizeError(f"{behavior} of {kind} {generator['name']}, which no base generates")
    elif behavior == "replace":
        existing.obj.pop("data", None)
    if kind == "Secret":
        existing.obj["type"] = "Opaque"
        data = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    existing.obj.setdefault("data", {}).update(data)


def _matches(obj: Obj, target: Obj) -> bool:
    if "kind" in target and obj["kind"] != target["kind"]:
        return False
    if "name" in target and obj["metadata"]["name"] != target["name"]:
        return False
    if "labelSelector" in target:
        labels = obj["metadata"].get("labels", {})
        for term in target["labelSelector"].split(","):
            key, _, value = term.partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
    return True


def _patch(level: _Level, directory: Path, patch: Obj) -> None:
    if "path" not in patch or set(patch) - {"path", "target"}:
        raise KustomizeError(f"{directory}: only `path` (+ `target`) patches are supported: {patch}")
    path = directory / patch["path"]
    if not path.is_file():
        raise KustomizeError(f"{directory}: patch {patch['path']!r} does not exist")
    documents = load_yaml_documents(path)
    if len(documents) == 1 and isinstance(documents[0], list):  # RFC 6902 operations
        if "target" not in patch:
            raise KustomizeError(f"{path}: a JSON 6902 patch needs a target")
        targets = [r for r in level.resources if _matches(r.obj, patch["target"])]
        if not targets:
            raise KustomizeError(f"{path}: no resource matches the target {patch['target']}")
        for res in targets:
            for op in documents[0]:
                _json6902(res.obj, op, path)
        return
    for document in documents:
        target = patch.get("target") or {"kind": document["kind"], "name": document["metadata"]["name"]}
        targets = [r for r in level.resources if _matches(r.obj, target)]
        if not targets:
            raise KustomizeError(f"{path}: no resource matches {target}")
        for res in targets:
            body = {k: v for k, v in document.items() if k not in ("apiVersion", "kind", "metadata")}
            _strategic_merge(res.obj, body, path)


def _strategic_merge(base: Obj, patch: Obj, source: Path) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise KustomizeError(f"{source}: patch directive {key} is not supported")
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _strategic_merge(base[key], value, source)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(base.get(key), list):
            merge_key = MERGE_KEYS[key]
            added = []
            for item in value:
                match = next((b for b in base[key] if b.get(merge_key) == item.get(merge_key)), None)
                if match is None:
                    added.append(copy.deepcopy(item))
                else:
                    _strategic_merge(match, item, source)
            # kustomize puts the patch's new items before the existing ones.
            base[key][:0] = added
        else:
            base[key] = copy.deepcopy(value)


def _json6902(obj: Obj, op: Obj, source: Path) -> None:
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.get(part)
        if node is None:
            raise KustomizeError(f"{source}: {op['path']} does not exist in {obj['metadata']['name']}")
    key: Any = int(last) if isinstance(node, list) and last != "-" else last
    exists = key < len(node) if isinstance(node, list) and isinstance(key, int) else key in node
    if op["op"] in ("replace", "remove") and not exists:
        raise KustomizeError(f"{source}: {op['op']} of missing {op['path']} in {obj['metadata']['name']}")
    if op["op"] == "remove":
        del node[key]
    elif op["op"] == "add" and isinstance(node, list):
        node.insert(len(node) if key == "-" else key, copy.deepcopy(op["value"]))
    elif op["op"] in ("add", "replace"):
        node[key] = copy.deepcopy(op["value"])
    else:
        raise KustomizeError(f"{source}: JSON patch op {op['op']!r} is not supported")


def pod_spec(obj: Obj) -> Obj | None:
    template = obj.get("spec", {}).get("template")
    return template["spec"] if template else None


def containers_of(obj: Obj) -> list[Obj]:
    spec = pod_spec(obj)
    return [] if spec is None else [*spec.get("initContainers", []), *spec["containers"]]


def _set_replicas(level: _Level, entry: Obj) -> None:
    targets = [r for r in level.resources if r.obj["metadata"]["name"] == entry["name"] and pod_spec(r.obj)]
    if not targets:
        raise KustomizeError(f"replicas: no workload named {entry['name']}")
    for res in targets:
        res.obj["spec"]["replicas"] = entry["count"]


def _set_image(level: _Level, entry: Obj) -> None:
    matched = False
    for res in level.resources:
        for container in containers_of(res.obj):
            name = container["image"].split("@")[0].rsplit(":", 1)[0]
            if name == entry["name"]:
                matched = True
                tag = container["image"][len(name) :]  # ":tag", "@digest" or ""
                new = entry.get("newName", name)
                container["image"] = f"{new}:{entry['newTag']}" if "newTag" in entry else new + tag
    if not matched:
        raise KustomizeError(f"images: no container uses {entry['name']}")


def _name_references(obj: Obj) -> Iterator[tuple[str, Obj, str]]:
    """(kind referred to, the dict holding the name, its key) for every ConfigMap/Secret reference."""
    spec = pod_spec(obj)
    if spec is None:
        return
    for container in containers_of(obj):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"], "name"
            if "secretRef" in source:
                yield "Secret", source["secretRef"], "name"
        for var in container.get("env", []):
            ref = var.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                yield "ConfigMap", ref["configMapKeyRef"], "name"
            if "secretKeyRef" in ref:
                yield "Secret", ref["secretKeyRef"], "name"
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"], "name"
        if "secret" in volume:
            yield "Secret", volume["secret"], "secretName"
        for source in volume.get("projected", {}).get("sources", []):
            if "configMap" in source:
                yield "ConfigMap", source["configMap"], "name"
            if "secret" in source:
                yield "Secret", source["secret"], "name"


def render_kustomization(directory: Path) -> list[Obj]:
    """The objects `kustomize build directory` would print (generated names hashed)."""
    level = _build(directory)
    renamed: dict[tuple[str, str], str] = {}
    for res in level.resources:
        if res.generated:
            content = json.dumps([res.obj.get("data"), res.obj.get("type")], sort_keys=True)
            suffix = hashlib.sha256(content.encode()).hexdigest()[:10]
            old = res.obj["metadata"]["name"]
            renamed[(res.obj["kind"], old)] = res.obj["metadata"]["name"] = f"{old}-{suffix}"
    objects = [res.obj for res in level.resources]
    for obj in objects:
        for kind, holder, key in _name_references(obj):
            holder[key] = renamed.get((kind, holder[key]), holder[key])
    return objects


@dataclass(frozen=True)
class Rendered:
    """One overlay's objects, with the look-ups the tests keep needing."""

    overlay: str
    objects: list[Obj]

    def all(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj:
        found = [o for o in self.all(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def generated(self, kind: str, name: str) -> Obj | None:
        """A generated ConfigMap/Secret by its name before the hash suffix, if rendered."""
        found = [o for o in self.all(kind) if o["metadata"]["name"].rsplit("-", 1)[0] == name]
        return found[0] if found else None

    def env_of(self, container: Obj, secret_defaults: dict[str, str] | None = None) -> dict[str, str]:
        """The environment a container starts with: envFrom (in order), then env."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.get("ConfigMap", source["configMapRef"]["name"])["data"])
            if "secretRef" in source:
                name = source["secretRef"]["name"]
                secrets = [o for o in self.all("Secret") if o["metadata"]["name"] == name]
                if secrets:
                    env.update({k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()})
                else:  # created outside the repository (production): stand-ins for its keys
                    assert secret_defaults is not None, f"{self.overlay}: Secret {name} is not rendered"
                    env.update(secret_defaults)
        env.update({var["name"]: var["value"] for var in container.get("env", []) if "value" in var})
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref is None:
                continue
            secrets = [o for o in self.all("Secret") if o["metadata"]["name"] == ref["name"]]
            if secrets:
                env[var["name"]] = base64.b64decode(secrets[0]["data"][ref["key"]]).decode()
            else:  # created outside the repository (production): a stand-in
                env[var["name"]] = f"<{ref['name']}/{ref['key']}>"
        return env


@pytest.fixture(scope="session")
def render() -> Callable[[Path], list[Obj]]:
    return render_kustomization


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    """Both overlays, rendered once per session."""
    return {name: Rendered(name, render_kustomization(K8S / "overlays" / name)) for name in OVERLAYS}


@dataclass(frozen=True)
class Process:
    """A process of the stack as the catalogue (accrue.embedded.stack) and its settings class see it."""

    name: str
    grpc_service: str | None  # None for the gateway
    grpc_port: int | None
    metrics_port: int  # the gateway's is its HTTP port
    settings: type[BaseSettings]

    @property
    def env_prefix(self) -> str:
        return str(self.settings.model_config.get("env_prefix", ""))


def _settings_class(module: ModuleType) -> type[BaseSettings]:
    classes = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"{module.__name__} should define exactly one settings class: {classes}"
    return classes[0]


@pytest.fixture(scope="session")
def processes() -> dict[str, Process]:
    """Every process in the service catalogue, the gateway last, with its settings class."""
    from accrue.embedded.stack import GATEWAY, SERVICES

    result = {
        s.name: Process(
            s.name,
            s.grpc_service,
            s.default_grpc_port,
            s.default_metrics_port,
            _settings_class(importlib.import_module(f"accrue.services.{s.name}.settings")),
        )
        for s in SERVICES
    }
    gateway_settings = _settings_class(importlib.import_module(f"accrue.services.{GATEWAY.name}.settings"))
    result[GATEWAY.name] = Process(GATEWAY.name, None, None, GATEWAY.default_port, gateway_settings)
    return result


@pytest.fixture
def isolated_environ(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """Replace every ACCRUE_* variable of this process with the given ones (settings read os.environ)."""
    import os

    def apply(env: dict[str, str]) -> None:
        for key in [k for k in os.environ if k.startswith("ACCRUE_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    return apply
