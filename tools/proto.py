"""Contract tooling: fetch google/api protos from the wheel, generate Python, lint, check.

Usage: python tools/proto.py {deps|gen|check|lint|breaking}

* deps      copy google/api/*.proto from the installed googleapis-common-protos wheel into
            .build/protodeps (never copied by hand, never committed).
* gen       regenerate libs/contracts/src from proto/ (protoc from grpcio-tools, typed stubs
            from mypy-protobuf) plus a descriptor set with comments for the gateway.
* check     regenerate into a temp dir and fail if the committed code differs.
* lint      buf lint (STANDARD + COMMENTS).
* breaking  buf breaking against the main branch (skipped, with a message, when main has no
            contracts yet).
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
DEPS = ROOT / ".build" / "protodeps"
OUT = ROOT / "libs" / "contracts" / "src"
GENERATED_ROOT = OUT / "accrue"
DESCRIPTOR_SET = GENERATED_ROOT / "contracts" / "descriptors.binpb"
GOOGLE_API_PROTOS = ("annotations.proto", "http.proto", "field_behavior.proto")
BIN = Path(sys.executable).parent


def deps() -> None:
    import google.api  # from googleapis-common-protos

    src = Path(next(iter(google.api.__path__)))
    dst = DEPS / "google" / "api"
    dst.mkdir(parents=True, exist_ok=True)
    for name in GOOGLE_API_PROTOS:
        shutil.copyfile(src / name, dst / name)


def _proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))


def _generate(out: Path) -> None:
    import grpc_tools

    deps()
    well_known = Path(next(iter(grpc_tools.__path__))) / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    (out / "accrue" / "contracts").mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{DEPS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out / 'accrue' / 'contracts' / 'descriptors.binpb'}",
        *_proto_files(),
    ]
    subprocess.run(args, check=True, cwd=PROTO)


def gen() -> None:
    # Only generated files are replaced; accrue/contracts/__init__.py is hand-written.
    for path in GENERATED_ROOT.rglob("*"):
        if path.is_file() and (
            path.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"))
            or path == DESCRIPTOR_SET
        ):
            path.unlink()
    _generate(OUT)
    print(f"generated {sum(1 for _ in GENERATED_ROOT.rglob('*_pb2*.py'))} modules into {OUT}")


def check() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        _generate(fresh)
        fresh_files = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
        committed = {
            p.relative_to(OUT)
            for p in GENERATED_ROOT.rglob("*")
            if p.is_file()
            and (
                p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"))
                or p == DESCRIPTOR_SET
            )
        }
        problems = [f"missing: {p}" for p in sorted(fresh_files - committed)]
        problems += [f"stale (no proto makes it): {p}" for p in sorted(committed - fresh_files)]
        problems += [
            f"differs: {p}"
            for p in sorted(fresh_files & committed)
            if not filecmp.cmp(fresh / p, OUT / p, shallow=False)
        ]
    if problems:
        print("generated contracts are out of date; run `make proto`:\n  " + "\n  ".join(problems))
        raise SystemExit(1)
    print(f"generated contracts match proto/ ({len(fresh_files)} files)")


def lint() -> None:
    deps()
    subprocess.run([str(BIN / "buf"), "lint"], check=True, cwd=ROOT)
    print("buf lint: clean")


def breaking() -> None:
    deps()
    # A clone may have main only as a remote branch (e.g. CI on a detached checkout).
    for against in ("main", "origin/main"):
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{against}:proto"], cwd=ROOT, capture_output=True
        )
        if found.returncode == 0:
            break
    else:
        print("buf breaking: skipped, main has no proto/ yet")
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        archive = subprocess.run(
            ["git", "archive", against, "proto", "buf.yaml"], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
        shutil.copytree(DEPS, base / ".build" / "protodeps")
        # Compare image with image: the workspace has two modules (ours and the google deps).
        main_image, current_image = base / "main.binpb", base / "current.binpb"
        subprocess.run([str(BIN / "buf"), "build", str(base), "-o", str(main_image)], check=True)
        subprocess.run([str(BIN / "buf"), "build", str(ROOT), "-o", str(current_image)], check=True)
        subprocess.run(
            [str(BIN / "buf"), "breaking", str(current_image), "--against", str(main_image)],
            check=True,
            cwd=ROOT,
        )
    print(f"buf breaking: no breaking changes against {against}")


COMMANDS = {"deps": deps, "gen": gen, "check": check, "lint": lint, "breaking": breaking}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        raise SystemExit(2)
    COMMANDS[sys.argv[1]]()
