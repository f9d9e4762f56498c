"""deploy/k8s as files: every YAML parses, every kustomization names files that exist, every
overlay renders, and the test resolver renders what kustomize itself renders."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = sorted(K8S.rglob("kustomization.yaml"))
YAML_FILES = sorted(K8S.rglob("*.yaml"))


def test_the_layout_is_base_nats_and_two_overlays() -> None:
    assert [p.parent.relative_to(K8S).as_posix() for p in KUSTOMIZATIONS] == [
        "base",
        "nats",
        "overlays/local",
        "overlays/production",
    ]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(K8S).as_posix())
def test_every_yaml_document_is_a_kubernetes_object_or_a_json_patch(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path} is empty"
    for document in documents:
        if path.name == "kustomization.yaml":
            assert document["kind"] == "Kustomization"
        elif isinstance(document, list):  # an RFC 6902 patch
            assert all({"op", "path"} <= set(op) for op in document)
        else:
            assert {"apiVersion", "kind", "metadata"} <= set(document), f"{path}: {list(document)}"
            assert document["metadata"].get("name"), f"{path}: an object without a name"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.parent.name)
def test_every_file_a_kustomization_names_exists(kustomization: Path) -> None:
    spec = yaml.safe_load(kustomization.read_text())
    here = kustomization.parent
    named = [*spec.get("resources", []), *(p["path"] for p in spec.get("patches", []))]
    for generator in [*spec.get("configMapGenerator", []), *spec.get("secretGenerator", [])]:
        named += [entry.rpartition("=")[2] for entry in generator.get("files", [])]
    missing = [entry for entry in named if not (here / entry).exists()]
    assert not missing, f"{kustomization} names files that do not exist: {missing}"


def test_every_yaml_file_is_used_by_some_kustomization() -> None:
    used: set[Path] = set()
    for kustomization in KUSTOMIZATIONS:
        spec = yaml.safe_load(kustomization.read_text())
        here = kustomization.parent
        used.update((here / r).resolve() for r in spec.get("resources", []))
        used.update((here / p["path"]).resolve() for p in spec.get("patches", []))
    orphans = [p for p in YAML_FILES if p.name != "kustomization.yaml" and p.resolve() not in used]
    assert not orphans, f"files no kustomization applies: {orphans}"


@pytest.mark.parametrize("overlay", ["local", "production"])
def test_each_overlay_renders_with_every_object_in_the_accrue_namespace(overlay: str, render) -> None:
    objects = render(K8S / "overlays" / overlay)
    assert objects
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "accrue", obj["metadata"]["name"]
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), "an object is defined twice"


def test_the_resolver_refuses_a_patch_that_targets_nothing(tmp_path: Path, render) -> None:
    # The check that patches target existing resources must be able to fail.
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(K8S / "base")],
                "patches": [{"path": "patch.yaml"}],
            }
        )
    )
    (tmp_path / "patch.yaml").write_text(
        yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "biling"}})
    )
    with pytest.raises(Exception, match="no resource matches"):
        render(tmp_path)


def test_the_resolver_refuses_fields_it_does_not_implement(tmp_path: Path, render) -> None:
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"commonLabels": {"a": "b"}}))
    with pytest.raises(Exception, match="commonLabels"):
        render(tmp_path)


def _generator_names() -> set[str]:
    names: set[str] = set()
    for kustomization in KUSTOMIZATIONS:
        spec = yaml.safe_load(kustomization.read_text())
        for generator in [*spec.get("configMapGenerator", []), *spec.get("secretGenerator", [])]:
            names.add(generator["name"])
    return names


def _normalised(objects: list[dict]) -> dict[tuple[str, str], dict]:
    """Objects by (kind, name), with generated names' content hashes replaced by HASH.

    Secret data is compared decoded: kustomize wraps long base64 values over several lines.
    """
    objects = [
        {**o, "data": {k: base64.b64decode(v).decode() for k, v in o["data"].items()}}
        if o["kind"] == "Secret"
        else o
        for o in objects
    ]
    text = json.dumps(objects, sort_keys=True)
    for name in _generator_names():
        text = re.sub(rf'"{re.escape(name)}-[a-z0-9]{{10}}"', f'"{name}-HASH"', text)
    return {(o["kind"], o["metadata"]["name"]): o for o in json.loads(text)}


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed"
)
@pytest.mark.parametrize("overlay", ["local", "production"])
def test_the_resolver_renders_what_kubectl_kustomize_renders(overlay: str, render) -> None:
    done = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    theirs = _normalised([d for d in yaml.safe_load_all(done.stdout) if d is not None])
    ours = _normalised(render(K8S / "overlays" / overlay))
    assert sorted(ours) == sorted(theirs)
    different = [key for key in ours if ours[key] != theirs[key]]
    assert not different, f"the resolver and kustomize disagree on {different}"
