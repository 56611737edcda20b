"""Generate client code from protos/ for every language the project ships.

- Python: messages, gRPC stubs and typed ``.pyi`` stubs into clients/python/src/paca.
- Go: protoc-gen-go and protoc-gen-go-grpc output into clients/go/gen (import paths are given on
  the command line, so the .proto files stay free of Go options).
- Node: @grpc/proto-loader builds its stubs from .proto files at run time; the package ships a
  copy of protos/ in clients/node/proto.

Run through `make protos`; `--check` regenerates into a temporary directory and fails when the
committed code differs, so stale generated code cannot land.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
# The mypy-protobuf plugins live beside the interpreter of the virtualenv running this script.
BIN = Path(sys.executable).parent
GO_MODULE = "github.com/paca-integrations/paca/clients/go"
# Where `make go-plugins` installs protoc-gen-go and protoc-gen-go-grpc.
GO_PLUGIN_DIR = Path(os.environ.get("PACA_GO_PLUGIN_DIR", ROOT / "var" / "tools" / "go" / "bin"))


def _protos() -> list[str]:
    return sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))


def _protoc(*args: str) -> None:
    well_known = str(resources.files("grpc_tools") / "_proto")
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{well_known}"]
    # Plugins chat on stderr ("Writing mypy to ..."): show it only when protoc fails.
    result = subprocess.run(
        [*command, *args, *_protos()], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"protoc failed:\n{result.stdout}{result.stderr}")


def generate_python(out: Path) -> None:
    _protoc(
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
    )
    for directory in (out / "paca").rglob("*"):
        if directory.is_dir():
            (directory / "__init__.py").touch()


def generate_go(out: Path) -> None:
    mappings = []
    for proto in _protos():
        package_dir = str(Path(proto).parent)  # paca/api/v1
        area = Path(package_dir).parent.name  # api
        mappings.append(f"M{proto}={GO_MODULE}/gen/{package_dir};{area}v1")
    go_opts = ",".join(["paths=source_relative", *mappings])
    _protoc(
        f"--plugin=protoc-gen-go={GO_PLUGIN_DIR / 'protoc-gen-go'}",
        f"--plugin=protoc-gen-go-grpc={GO_PLUGIN_DIR / 'protoc-gen-go-grpc'}",
        f"--go_out={out}",
        f"--go_opt={go_opts}",
        f"--go-grpc_out={out}",
        f"--go-grpc_opt={go_opts}",
    )


def generate_node(out: Path) -> None:
    for proto in _protos():
        target = out / proto
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROTO_DIR / proto, target)


def _is_python_stub(path: Path) -> bool:
    # paca/<area>/v<N>/*.py(i) only: paca/client and other hand-written modules stay untouched.
    parts = path.parts
    return (
        path.suffix in {".py", ".pyi"}
        and len(parts) == 4
        and parts[0] == "paca"
        and parts[2][:1] == "v"
        and parts[2][1:].isdigit()
    )


# name -> (directory it owns, generator, which files in it are generated)
TARGETS: dict[str, tuple[Path, Callable[[Path], None], Callable[[Path], bool]]] = {
    "python": (
        ROOT / "clients" / "python" / "src",
        generate_python,
        _is_python_stub,
    ),
    "go": (ROOT / "clients" / "go" / "gen", generate_go, lambda p: p.suffix == ".go"),
    "node": (ROOT / "clients" / "node" / "proto", generate_node, lambda p: p.suffix == ".proto"),
}


def _files(root: Path, is_generated: Callable[[Path], bool]) -> set[Path]:
    if not root.exists():
        return set()
    return {
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and is_generated(p.relative_to(root))
    }


def regenerate(name: str) -> None:
    out, generator, is_generated = TARGETS[name]
    for path in _files(out, is_generated):
        (out / path).unlink()
    out.mkdir(parents=True, exist_ok=True)
    generator(out)


def stale(name: str) -> list[str]:
    out, generator, is_generated = TARGETS[name]
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generator(fresh)
        want, have = _files(fresh, is_generated), _files(out, is_generated)
        differing = [p for p in want & have if not filecmp.cmp(fresh / p, out / p, shallow=False)]
        return sorted(f"{name}: {p}" for p in (want ^ have) | set(differing))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when generated code is stale")
    parser.add_argument("--lang", choices=sorted(TARGETS), action="append", help="only these")
    options = parser.parse_args()
    languages = options.lang or sorted(TARGETS)
    if not options.check:
        for name in languages:
            regenerate(name)
        return 0
    problems = [line for name in languages for line in stale(name)]
    if problems:
        print("generated code is stale; run `make protos`:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print("generated code is up to date:", ", ".join(languages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
