"""Deployment files agree with the code they run: docker-compose.yml, deploy/k8s, the Dockerfile.

Nothing here starts a container or talks to a cluster. The files are parsed and checked for what
breaks silently: a renamed setting, a probe on the wrong port or service, a peer address nobody
listens on, a spool directory that is not on a volume, a grace period shorter than the drain.
The names and defaults come from the settings modules and the generated stubs, so a change in
the code that the deployment files miss fails here.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import opentelemetry.sdk.environment_variables as otel_environment_variables
import pytest
import yaml
from paca.api.v1 import api_service_pb2
from paca.db.v1 import db_service_pb2
from paca.monitor.v1 import monitor_service_pb2

import api_service.settings
import db_service.document.config
import db_service.keyvalue.settings
import db_service.settings
import monitor.settings
import paca_runtime.settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S_DIR = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"

ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet"})
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
# The webhook intake (api_service, HTTP) has no setting yet; its port is fixed by the design.
WEBHOOK_PORT = 8080
# Files the image's wheels are built from.
PACKAGED_SUFFIXES = frozenset({".py", ".pyi", ".sql", ".toml"})

# scripts/backing_services.sh: what the test suite's URLs (var/backing/env) expect of the
# engines, also when PACA_BACKING=compose runs them from docker-compose.yml.
BACKING_PORTS = {"postgres": 5432, "mariadb": 3306, "redis": 6379, "mongodb": 27017}
BACKING_ENV = {
    "postgres": {"POSTGRES_USER": "paca", "POSTGRES_PASSWORD": "paca", "POSTGRES_DB": "paca_test"},
    "mariadb": {
        "MARIADB_USER": "paca",
        "MARIADB_PASSWORD": "paca",
        "MARIADB_DATABASE": "paca_test",
    },
}
COMPOSE_SERVICES = frozenset({*BACKING_PORTS, "api_service", "db_service", "monitor", "jaeger"})


def _setting_names(module: ModuleType) -> frozenset[str]:
    """Module-level constants whose value is an environment variable's name."""
    return frozenset(
        value
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and ENV_NAME.fullmatch(value)
    )


def _field_default(cls: type[Any], name: str) -> Any:
    for field in dataclasses.fields(cls):
        if field.name == name:
            return field.default
    raise AssertionError(f"{cls.__name__} has no field {name}")


OTEL_NAMES = frozenset(
    value
    for name, value in vars(otel_environment_variables).items()
    if name.startswith("OTEL_") and isinstance(value, str)
)
RUNTIME_NAMES = _setting_names(paca_runtime.settings) | OTEL_NAMES


@dataclass(frozen=True)
class Ours:
    """One of our processes, as the code defines it."""

    module: str  # python -m <module>; also its compose service name
    grpc_service: str  # full name its health service reports on
    settings: ModuleType
    listen: str  # the setting naming its gRPC address
    default_listen: str
    more_settings: tuple[ModuleType, ...] = ()  # engines whose settings live beside them

    @property
    def known_names(self) -> frozenset[str]:
        """Every setting this process reads."""
        names = RUNTIME_NAMES | _setting_names(self.settings)
        for module in self.more_settings:
            names |= _setting_names(module)
        return names

    @property
    def port(self) -> int:
        return _port(self.default_listen)


OURS = {
    ours.module: ours
    for ours in (
        Ours(
            "api_service",
            api_service_pb2.DESCRIPTOR.services_by_name["ApiService"].full_name,
            api_service.settings,
            api_service.settings.LISTEN,
            _field_default(api_service.settings.ApiSettings, "listen"),
        ),
        Ours(
            "db_service",
            db_service_pb2.DESCRIPTOR.services_by_name["DbService"].full_name,
            db_service.settings,
            db_service.settings.LISTEN,
            _field_default(db_service.settings.DbSettings, "listen"),
            (db_service.document.config, db_service.keyvalue.settings),
        ),
        Ours(
            "monitor",
            monitor_service_pb2.DESCRIPTOR.services_by_name["MonitorService"].full_name,
            monitor.settings,
            monitor.settings.LISTEN,
            monitor.settings.DEFAULT_LISTEN,
        ),
    )
}
ALL_KNOWN_NAMES = frozenset().union(*(ours.known_names for ours in OURS.values()))
SHUTDOWN_GRACE_DEFAULT_S = paca_runtime.settings.RuntimeSettings().shutdown_grace_s


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _host(address: str) -> str:
    return address.rpartition(":")[0]


def _duration_s(text: str) -> float:
    """A compose duration such as ``20s`` or ``1m30s``."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", text)
    assert parts, f"not a duration: {text!r}"
    assert "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


# --- docker-compose.yml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _services(compose: Mapping[str, Any]) -> dict[str, Any]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def _compose_env(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (str(item).partition("=") for item in environment)
        return {name: value for name, _, value in pairs}
    return {str(name): "" if value is None else str(value) for name, value in environment.items()}


def _compose_env_of(compose: Mapping[str, Any], name: str) -> dict[str, str]:
    return _compose_env(_services(compose)[name])


def _published(service: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each short-syntax published port."""
    published = []
    for spec in service.get("ports", []):
        host_ip, host_port, container_port = str(spec).split("/")[0].rsplit(":", 2)
        published.append((host_ip, int(host_port), int(container_port)))
    return published


def _volume_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> source of each short-syntax volume."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, _, rest = str(spec).partition(":")
        mounts[rest.split(":")[0]] = source
    return mounts


def _under(path: str, directory: str) -> bool:
    return PurePosixPath(path).is_relative_to(PurePosixPath(directory))


def test_compose_has_the_whole_stack(compose: dict[str, Any]) -> None:
    assert set(_services(compose)) == COMPOSE_SERVICES


def test_compose_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("check_jsonschema")
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


@pytest.mark.parametrize(("name", "port"), sorted(BACKING_PORTS.items()))
def test_compose_backing_engines_serve_the_test_suite(
    compose: dict[str, Any], name: str, port: int
) -> None:
    service = _services(compose)[name]
    # Loopback only, on the engine's usual port: the URLs of var/backing/env.
    assert _published(service) == [("127.0.0.1", port, port)]
    # `docker compose up --wait` and depends_on need a health check to wait for.
    assert service["healthcheck"]["test"]
    environment = _compose_env(service)
    for variable, value in BACKING_ENV.get(name, {}).items():
        assert environment.get(variable) == value, variable


@pytest.mark.parametrize("name", sorted(OURS))
def test_compose_runs_our_services_from_the_one_image(compose: dict[str, Any], name: str) -> None:
    service = _services(compose)[name]
    assert service["command"] == ["python", "-m", OURS[name].module]
    assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]) == DOCKERFILE
    images = {_services(compose)[other]["image"] for other in OURS}
    assert len(images) == 1, f"one image for all three, got {images}"


@pytest.mark.parametrize("name", sorted(OURS))
def test_compose_env_names_are_settings_the_service_reads(
    compose: dict[str, Any], name: str
) -> None:
    unknown = set(_compose_env_of(compose, name)) - OURS[name].known_names
    assert unknown == set(), f"{name} sets names its code does not read"


@pytest.mark.parametrize("name", sorted(OURS))
def test_compose_services_listen_on_all_interfaces_at_their_port(
    compose: dict[str, Any], name: str
) -> None:
    ours = OURS[name]
    environment = _compose_env_of(compose, name)
    assert environment[ours.listen] == f"0.0.0.0:{ours.port}"
    for variable, value in environment.items():
        if variable.endswith("_LISTEN"):
            assert _host(value) == "0.0.0.0", variable
    # Published on the loopback only, each to the port the service listens on.
    for host_ip, host_port, container_port in _published(_services(compose)[name]):
        assert host_ip == "127.0.0.1"
        assert host_port == container_port
        assert any(
            _port(value) == container_port
            for variable, value in environment.items()
            if variable.endswith("_LISTEN")
        ), f"{name} publishes {container_port}, which it does not listen on"


@pytest.mark.parametrize("name", sorted(OURS))
def test_compose_peer_addresses_reach_a_listening_service(
    compose: dict[str, Any], name: str
) -> None:
    """Every *_ADDRESS the service reads is set, to a compose service's listen port."""
    environment = _compose_env_of(compose, name)
    addresses = {n for n in OURS[name].known_names if n.endswith("_ADDRESS")}
    assert addresses, f"{name} reads no peer address?"
    for variable in sorted(addresses):
        value = environment.get(variable)
        assert value, f"{name}: {variable} unset; its default is the loopback"
        peer = _host(value)
        assert peer in OURS, f"{name}: {variable}={value} names no service of ours"
        peer_listen = _compose_env_of(compose, peer)[OURS[peer].listen]
        assert _port(value) == _port(peer_listen), f"{name}: {variable}={value}"


@pytest.mark.parametrize("name", sorted(OURS))
def test_compose_health_checks_ask_the_service_itself(compose: dict[str, Any], name: str) -> None:
    ours = OURS[name]
    test = _services(compose)[name]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code = test[3]
    compile(code, f"{name} healthcheck", "exec")
    assert f"'127.0.0.1:{ours.port}'" in code
    assert f"service='{ours.grpc_service}'" in code
    assert "SERVING" in code


def test_compose_depends_on_waits_only_for_what_can_be_healthy(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, service in services.items():
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if condition["condition"] == "service_healthy":
                assert services[target].get("healthcheck"), f"{target} has no healthcheck"
    for name in OURS:
        assert services[name]["depends_on"], f"{name} starts before what it needs"


def test_compose_db_service_uses_postgres(compose: dict[str, Any]) -> None:
    url = _compose_env_of(compose, "db_service")[db_service.settings.DB_URL]
    parts = re.fullmatch(r"postgresql://(\w+):(\w+)@postgres:5432/(\w+)", url)
    assert parts, url
    user, password, database = parts.groups()
    postgres = _services(compose)["postgres"]
    environment = _compose_env(postgres)
    assert (environment["POSTGRES_USER"], environment["POSTGRES_PASSWORD"]) == (user, password)
    created = {environment["POSTGRES_DB"]}
    for ref in postgres.get("configs", []):
        content = compose["configs"][ref["source"]]["content"]
        created |= set(re.findall(r"CREATE DATABASE (\w+)", content))
    assert database in created
    assert _services(compose)["db_service"]["depends_on"]["postgres"] == {
        "condition": "service_healthy"
    }


@pytest.mark.parametrize("name", sorted(OURS))
def test_compose_traces_go_to_jaeger(compose: dict[str, Any], name: str) -> None:
    environment = _compose_env_of(compose, name)
    assert environment[paca_runtime.settings.OTLP_ENDPOINT] == "http://jaeger:4317"
    assert environment.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "grpc"
    jaeger = _services(compose)["jaeger"]
    assert _compose_env(jaeger)["COLLECTOR_OTLP_ENABLED"] == "true"
    assert ("127.0.0.1", 16686, 16686) in _published(jaeger)


def test_compose_call_log_spool_is_on_a_named_volume(compose: dict[str, Any]) -> None:
    service = _services(compose)["api_service"]
    environment = _compose_env(service)
    state_dir = environment[paca_runtime.settings.STATE_DIR]
    spool_dir = environment.get(
        api_service.settings.CALLLOG_SPOOL_DIR, f"{state_dir}/spool/calllog"
    )
    mounts = [(p, s) for p, s in _volume_mounts(service).items() if _under(spool_dir, p)]
    assert mounts, f"{spool_dir} is on no volume"
    for _, source in mounts:
        assert source in compose["volumes"], f"{source} is not a named volume"


@pytest.mark.parametrize("name", sorted(OURS))
def test_compose_stop_grace_exceeds_the_drain(compose: dict[str, Any], name: str) -> None:
    service = _services(compose)[name]
    environment = _compose_env(service)
    grace = float(environment.get(paca_runtime.settings.SHUTDOWN_GRACE, SHUTDOWN_GRACE_DEFAULT_S))
    assert _duration_s(service["stop_grace_period"]) > grace


# --- deploy/k8s -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path == KUSTOMIZATION:
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                assert isinstance(document, dict), path
                documents.append(document)
    return documents


def _of_kind(manifests: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] in kinds]


def _named(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [m for m in _of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _containers(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert isinstance(containers, list)
    return containers


def _ours(container: Mapping[str, Any]) -> Ours:
    command = container["command"]
    assert command[:2] == ["python", "-m"], command
    return OURS[command[2]]


def _our_containers(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for workload in _of_kind(manifests, *WORKLOAD_KINDS):
        for container in _containers(workload):
            yield workload["metadata"]["name"], container


def _k8s_env(manifests: list[dict[str, Any]], container: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment: envFrom sources first, env entries over them."""
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config = _named(manifests, "ConfigMap", source["configMapRef"]["name"])
            environment.update(config.get("data", {}))
        if "secretRef" in source:
            secret = _named(manifests, "Secret", source["secretRef"]["name"])
            environment.update(secret.get("stringData", {}))
    for entry in container.get("env", []):
        environment[entry["name"]] = entry.get("value", "<from valueFrom>")
    return environment


def _container_ports(workload: Mapping[str, Any]) -> dict[str | int, int]:
    """Container port by name and by number."""
    ports: dict[str | int, int] = {}
    for container in _containers(workload):
        for port in container.get("ports", []):
            ports[port["containerPort"]] = port["containerPort"]
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
    return ports


def _selects(selector: Mapping[str, str], workload: Mapping[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector.items())


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {KUSTOMIZATION.name}
    assert listed == on_disk


def test_k8s_manifests_match_the_kubernetes_schemas(manifests: list[dict[str, Any]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.utils.latest_version()
    for manifest in manifests:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_k8s_runs_each_service_once(manifests: list[dict[str, Any]]) -> None:
    modules = sorted(_ours(container).module for _, container in _our_containers(manifests))
    assert modules == sorted(OURS)


def test_k8s_config_holds_only_settings_the_code_reads(manifests: list[dict[str, Any]]) -> None:
    for config in _of_kind(manifests, "ConfigMap"):
        assert set(config.get("data", {})) <= ALL_KNOWN_NAMES, config["metadata"]["name"]
    for secret in _of_kind(manifests, "Secret"):
        names = set(secret.get("stringData", {})) | set(secret.get("data", {}))
        assert names <= ALL_KNOWN_NAMES, secret["metadata"]["name"]


def test_k8s_env_names_are_settings_the_service_reads(manifests: list[dict[str, Any]]) -> None:
    for workload, container in _our_containers(manifests):
        ours = _ours(container)
        unknown = set(_k8s_env(manifests, container)) - ours.known_names
        assert unknown == set(), f"{workload} sets names {ours.module} does not read"


def test_k8s_env_references_resolve(manifests: list[dict[str, Any]]) -> None:
    for _, container in _our_containers(manifests):
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                secret = _named(manifests, "Secret", ref["name"])
                assert ref["key"] in secret.get("stringData", {}) | secret.get("data", {})


def test_k8s_services_listen_on_all_interfaces(manifests: list[dict[str, Any]]) -> None:
    for workload, container in _our_containers(manifests):
        ours = _ours(container)
        environment = _k8s_env(manifests, container)
        assert environment[ours.listen] == f"0.0.0.0:{ours.port}", workload
        for variable, value in environment.items():
            if variable.endswith("_LISTEN"):
                assert _host(value) == "0.0.0.0", f"{workload}: {variable}"


def test_k8s_peer_addresses_reach_a_service_port(manifests: list[dict[str, Any]]) -> None:
    """Every *_ADDRESS a process reads is set to a Service and one of its ports."""
    services = {s["metadata"]["name"]: s for s in _of_kind(manifests, "Service")}
    for workload, container in _our_containers(manifests):
        environment = _k8s_env(manifests, container)
        for variable in sorted(n for n in _ours(container).known_names if n.endswith("_ADDRESS")):
            value = environment.get(variable)
            assert value, f"{workload}: {variable} unset; its default is the loopback"
            service = services.get(_host(value))
            assert service is not None, f"{workload}: {variable}={value} names no Service"
            ports = {p["port"] for p in service["spec"]["ports"]}
            assert _port(value) in ports, f"{workload}: {variable}={value}"


def test_k8s_probes_ask_the_service_on_its_port(manifests: list[dict[str, Any]]) -> None:
    full_names = {ours.grpc_service for ours in OURS.values()}
    for workload in _of_kind(manifests, *WORKLOAD_KINDS):
        ports = set(_container_ports(workload).values())
        for container in _containers(workload):
            ours = _ours(container)
            assert "livenessProbe" in container, workload["metadata"]["name"]
            assert "readinessProbe" in container, workload["metadata"]["name"]
            for probe in PROBES:
                if probe not in container:
                    continue
                grpc = container[probe]["grpc"]
                assert grpc["port"] in ports, f"{probe} port is no containerPort"
                assert grpc["port"] == ours.port, probe
                assert grpc["service"] in full_names
                assert grpc["service"] == ours.grpc_service, probe


def test_k8s_termination_grace_exceeds_the_drain(manifests: list[dict[str, Any]]) -> None:
    for workload in _of_kind(manifests, *WORKLOAD_KINDS):
        for container in _containers(workload):
            environment = _k8s_env(manifests, container)
            grace = float(
                environment.get(paca_runtime.settings.SHUTDOWN_GRACE, SHUTDOWN_GRACE_DEFAULT_S)
            )
            pod = workload["spec"]["template"]["spec"]
            assert pod["terminationGracePeriodSeconds"] > grace, workload["metadata"]["name"]


def test_k8s_pods_are_bounded_and_unprivileged(manifests: list[dict[str, Any]]) -> None:
    for workload in _of_kind(manifests, *WORKLOAD_KINDS):
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        # Service links would put <SERVICE>_PORT variables next to the PACA_* settings.
        assert pod["enableServiceLinks"] is False, name
        for container in _containers(workload):
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), name


def test_k8s_services_select_a_workload_port(manifests: list[dict[str, Any]]) -> None:
    workloads = _of_kind(manifests, *WORKLOAD_KINDS)
    for service in _of_kind(manifests, "Service"):
        name = service["metadata"]["name"]
        selected = [w for w in workloads if _selects(service["spec"]["selector"], w)]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} workloads"
        ports = _container_ports(selected[0])
        for port in service["spec"]["ports"]:
            assert port.get("targetPort", port["port"]) in ports, f"{name}: {port}"


def test_k8s_api_spool_is_on_a_claim_per_pod(manifests: list[dict[str, Any]]) -> None:
    """The call-log spool survives restarts, and no two pods write one spool."""
    (api,) = [
        w
        for w in _of_kind(manifests, *WORKLOAD_KINDS)
        if _ours(_containers(w)[0]).module == "api_service"
    ]
    assert api["kind"] == "StatefulSet"
    (container,) = _containers(api)
    environment = _k8s_env(manifests, container)
    state_dir = environment[paca_runtime.settings.STATE_DIR]
    spool_dir = environment.get(
        api_service.settings.CALLLOG_SPOOL_DIR, f"{state_dir}/spool/calllog"
    )
    claims = {t["metadata"]["name"] for t in api["spec"]["volumeClaimTemplates"]}
    mounts = [m for m in container["volumeMounts"] if _under(spool_dir, m["mountPath"])]
    assert mounts, f"{spool_dir} is on no volume"
    assert all(m["name"] in claims for m in mounts), mounts
    # The governing Service of a StatefulSet is headless and selects it.
    governing = _named(manifests, "Service", api["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert _selects(governing["spec"]["selector"], api)


def test_k8s_autoscaler_targets_a_workload_with_cpu_requests(
    manifests: list[dict[str, Any]],
) -> None:
    autoscalers = _of_kind(manifests, "HorizontalPodAutoscaler")
    assert autoscalers
    for hpa in autoscalers:
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        workload = _named(manifests, target["kind"], target["name"])
        assert target["apiVersion"] == workload["apiVersion"]
        assert hpa["spec"]["minReplicas"] <= workload["spec"]["replicas"]
        metrics = [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
        assert "cpu" in metrics
        for container in _containers(workload):
            assert "cpu" in container["resources"]["requests"]


# --- deploy/Dockerfile and .dockerignore ----------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [arguments for key, arguments in self.instructions if key == keyword]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    """The Dockerfile's stages, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.strip().partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            for name, value in global_args.items():
                arguments = arguments.replace(f"${{{name}}}", value).replace(f"${name}", value)
            words = arguments.split()
            result.append(Stage(words[0], words[2] if len(words) > 2 else ""))
        elif not result and keyword == "ARG":
            name, _, value = arguments.partition("=")
            global_args[name] = value
        else:
            assert result, f"{keyword} before FROM"
            result[-1].instructions.append((keyword, arguments))
    return result


def _dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pattern_matches(pattern: str, path: str) -> bool:
    if pattern.startswith("**/"):
        segments = path.split("/")
        return any(
            _pattern_matches(pattern[3:], "/".join(segments[i:])) for i in range(len(segments))
        )
    return pattern.count("/") == path.count("/") and fnmatch.fnmatchcase(path, pattern)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves ``path`` out (a pattern on a parent covers it)."""
    assert not any(p.startswith("!") for p in patterns), "exceptions are not modelled here"
    segments = path.split("/")
    prefixes = ["/".join(segments[: i + 1]) for i in range(len(segments))]
    return any(_pattern_matches(p, prefix) for p in patterns for prefix in prefixes)


def test_dockerfile_runtime_is_slim_python_as_a_non_root_user(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "multi-stage: wheels are built apart from the runtime"
    runtime = stages[-1]
    assert runtime.base == "python:3.11-slim"
    (user,) = runtime.arguments("USER")
    assert user.split(":")[0] not in {"0", "root"}
    # The runtime installs the builder's wheels and nothing from an index.
    (install,) = [a for a in runtime.arguments("RUN") if "pip install" in a]
    assert "--no-index" in install
    assert f"from={stages[0].name}" in install


def test_dockerfile_exposes_the_default_ports(stages: list[Stage]) -> None:
    exposed = {int(p.split("/")[0]) for a in stages[-1].arguments("EXPOSE") for p in a.split()}
    defaults = {ours.port for ours in OURS.values()}
    defaults |= {_port(monitor.settings.DEFAULT_METRICS_LISTEN), WEBHOOK_PORT}
    assert defaults <= exposed


def test_dockerfile_environment_suits_a_container(stages: list[Stage]) -> None:
    environment: dict[str, str] = {}
    for arguments in stages[-1].arguments("ENV"):
        for word in shlex.split(arguments):
            name, _, value = word.partition("=")
            environment[name] = value
    ours_names = {n for n in environment if not n.startswith(("PYTHON", "PIP_"))}
    assert ours_names - ALL_KNOWN_NAMES == set()
    for ours in OURS.values():
        assert environment[ours.listen] == f"0.0.0.0:{ours.port}"
    for name, value in environment.items():
        if name.endswith("_LISTEN"):
            assert _host(value) == "0.0.0.0", name
    # Local state lives on the declared volume.
    volumes = {v for a in stages[-1].arguments("VOLUME") for v in json.loads(a)}
    assert environment[paca_runtime.settings.STATE_DIR] in volumes


def test_dockerfile_commands_select_our_entry_points(stages: list[Stage]) -> None:
    (cmd,) = stages[-1].arguments("CMD")
    command = json.loads(cmd)
    assert command[:2] == ["python", "-m"]
    assert command[2] in OURS


def test_dockerignore_keeps_local_state_out_and_sources_in(stages: list[Stage]) -> None:
    patterns = _dockerignore_patterns()
    for left_out in (
        ".git/HEAD",
        ".venv/bin/python",
        "var/db/main.db",
        "var/spool/calllog/1.batch",
        "api_service/__pycache__/app.cpython-311.pyc",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/cache",
        ".ruff_cache/x",
        "clients/node/node_modules/x/index.js",
    ):
        assert _ignored(left_out, patterns), left_out
    copied: list[str] = []
    for stage in stages:
        for arguments in stage.arguments("COPY"):
            words = [w for w in arguments.split() if not w.startswith("--")]
            if "--from" not in arguments:
                copied.extend(words[:-1])
    assert copied
    for source in copied:
        path = ROOT / source
        assert path.exists(), source
        assert not _ignored(source, patterns), source
        # What the wheels are built from: sources, stubs, migrations, markers.
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            packaged = file.suffix in PACKAGED_SUFFIXES or file.name == "py.typed"
            if packaged and "__pycache__" not in relative and ".egg-info" not in relative:
                assert not _ignored(relative, patterns), relative
