"""Generate Python code and typed stubs from protos/ into clients/python/src.

Run through `make protos`; `--check` regenerates into a temporary directory and fails when the
committed code differs, so stale generated code cannot land.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
OUT_DIR = ROOT / "clients" / "python" / "src"
GENERATED_PACKAGE = "paca"
# The mypy-protobuf plugins live beside the interpreter of the virtualenv running this script.
BIN = Path(sys.executable).parent
# Hand-written modules inside the generated tree that generation must keep.
KEEP = {"__init__.py", "py.typed"}


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    # protoc plugins chat on stderr ("Writing mypy to ..."): show it only when protoc fails.
    result = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"protoc failed:\n{result.stdout}{result.stderr}")
    for directory in (out / GENERATED_PACKAGE).rglob("*"):
        if directory.is_dir():
            (directory / "__init__.py").touch()


def generated_files(root: Path) -> set[Path]:
    base = root / GENERATED_PACKAGE
    return {
        p.relative_to(root)
        for p in base.rglob("*")
        if p.is_file() and p.suffix in {".py", ".pyi"} and p.parent != base
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when generated code is stale")
    check = parser.parse_args().check
    if not check:
        for sub in (OUT_DIR / GENERATED_PACKAGE).iterdir():
            if sub.is_dir() and sub.name not in KEEP:
                shutil.rmtree(sub)
        generate(OUT_DIR)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        want, have = generated_files(fresh), generated_files(OUT_DIR)
        stale = sorted(str(p) for p in want ^ have)
        stale += sorted(
            str(p) for p in want & have if not filecmp.cmp(fresh / p, OUT_DIR / p, shallow=False)
        )
    if stale:
        print("generated code is stale; run `make protos`:", *stale, sep="\n  ", file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
