#!/usr/bin/env python3
"""Checks every deployment artifact offline; deploy/validate.sh runs it in its venv.

Each step prints what it checked; any problem is collected, printed at the
end, and makes the exit code 1. The tools are the pinned packages of
deploy/requirements.txt (hadolint, check-jsonschema with the Compose
specification's schema, kubernetes-validate with the Kubernetes schemas,
promql-parser), kubectl's built-in kustomize, haproxy -c where HAProxy is
installed, and the floodgate binary's own check-config.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib

import promql_parser
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "kubernetes")
OVERLAYS = ["small", "large"]
COMPONENTS = ["inflight-hpa", "servicemonitor"]
# Custom resources: no Kubernetes schema covers them; skipped by kind, by name.
CRD_KINDS = {"ServiceMonitor"}
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def rel(path):
    return os.path.relpath(path, ROOT)


def step(title):
    print(f"validate: {title}", flush=True)


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def tool(venv_bin, name):
    return os.path.join(venv_bin, name)


# --- Dockerfile ---------------------------------------------------------------


def dockerfile(venv_bin):
    step("Dockerfile: hadolint")
    result = run([tool(venv_bin, "hadolint"), "--no-color", os.path.join(ROOT, "Dockerfile")])
    if result.returncode != 0:
        problem("Dockerfile", "hadolint:\n" + (result.stdout + result.stderr).strip())
    text = open(os.path.join(ROOT, "Dockerfile"), encoding="utf-8").read()
    for needed, why in [
        ("cargo build --release --locked -p floodgate", "the build command check.sh runs"),
        ("USER 65532:65532", "the non-root user"),
        ("EXPOSE 8080", "the port"),
        ("HEALTHCHECK", "a health check"),
        ("COPY deploy/docker/floodgate.toml /etc/floodgate/floodgate.toml", "the image's config"),
    ]:
        if needed not in text:
            problem("Dockerfile", f"no {needed!r} ({why})")


# --- Floodgate configs --------------------------------------------------------


def check_config(floodgate, path, env, where):
    """`floodgate check-config` with exactly this environment."""
    result = run([floodgate, "check-config", path], env={"PATH": "/usr/bin:/bin", **env})
    if result.returncode != 0:
        problem(where, "floodgate check-config:\n" + (result.stdout + result.stderr).strip())
        return None
    print(f"  {result.stdout.strip()}")
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def references(path):
    """The ${VAR} names a config file uses outside comments."""
    names = set()
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        names.update(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", line))
    return names


# --- docker-compose -----------------------------------------------------------


def compose_value(value):
    """A compose value with ${VAR:-default} / ${VAR:?message} / ${VAR} resolved for a check."""

    def one(match):
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if op == ":-":
            return rest
        return "0123456789abcdef0123456789abcdef" if "KEY" in name else f"check-{name.lower()}"

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", one, str(value))


def compose(venv_bin, floodgate):
    path = os.path.join(ROOT, "docker-compose.yml")
    step("docker-compose.yml: the Compose specification's schema (check-jsonschema)")
    result = run([tool(venv_bin, "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path])
    if result.returncode != 0:
        problem("docker-compose.yml", (result.stdout + result.stderr).strip())
        return
    spec = yaml.safe_load(open(path, encoding="utf-8"))
    services = spec.get("services", {})
    nodes = sorted(name for name in services if name.startswith("floodgate-"))
    step(f"docker-compose.yml: {len(services)} services, nodes {', '.join(nodes)}")
    if len(nodes) != 3:
        problem("docker-compose.yml", f"expected 3 floodgate nodes, found {nodes}")
    for needed in ["redis", "postgres", "lb", "prometheus", "grafana"]:
        if needed not in services:
            problem("docker-compose.yml", f"no {needed} service")
    declared = set((spec.get("volumes") or {}).keys())
    for name, service in services.items():
        for dependency in service.get("depends_on") or []:
            if dependency not in services:
                problem("docker-compose.yml", f"{name} depends on {dependency}, which is no service")
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source.startswith("./"):
                if not os.path.exists(os.path.join(ROOT, source)):
                    problem("docker-compose.yml", f"{name} mounts {source}, which does not exist")
            elif source not in declared:
                problem("docker-compose.yml", f"{name} uses volume {source}, not declared")
    # The nodes' config, checked by the binary with the nodes' environment.
    checked = set()
    for name in nodes:
        service = services[name]
        mounts = [v.split(":") for v in service.get("volumes", []) if isinstance(v, str)]
        config_target = service["command"][service["command"].index("--config") + 1]
        sources = [m[0] for m in mounts if len(m) > 1 and m[1] == config_target]
        if len(sources) != 1:
            problem("docker-compose.yml", f"{name}: nothing mounted at its --config {config_target}")
            continue
        source = os.path.normpath(os.path.join(ROOT, sources[0]))
        if source in checked:
            continue
        checked.add(source)
        env = {k: compose_value(v) for k, v in (service.get("environment") or {}).items()}
        step(f"{rel(source)}: floodgate check-config with {name}'s environment")
        config = check_config(floodgate, source, env, rel(source))
        if config is None:
            continue
        if config.get("state", {}).get("backend") != "redis":
            problem(rel(source), "a cluster node needs [state] backend = \"redis\"")
        if not str(env.get("FLOODGATE_DATABASE_URL", "")).startswith("postgres://"):
            problem("docker-compose.yml", f"{name}: FLOODGATE_DATABASE_URL is not PostgreSQL")
        lb = services.get("lb", {}).get("networks", {})
        lb_address = next(
            (n.get("ipv4_address") for n in lb.values() if isinstance(n, dict)), None
        ) if isinstance(lb, dict) else None
        trusted = config.get("limits", {}).get("trusted_proxies", [])
        if lb_address not in trusted:
            problem(rel(source), f"[limits] trusted_proxies {trusted} lacks the load balancer {lb_address}")
        server = config.get("server", {})
        drain = seconds(server.get("shutdown_grace", "30s")) + seconds(server.get("drain_delay", "0s"))
        stop = seconds(service.get("stop_grace_period", "10s"))
        if stop < drain + 5:
            problem("docker-compose.yml", f"{name}: stop_grace_period {stop:g} s < drain_delay + shutdown_grace ({drain:g} s) + 5 s")
    # HAProxy (its file takes the nodes from the environment) balances
    # exactly the nodes; Prometheus scrapes exactly them.
    haproxy_cfg = os.path.join(DEPLOY, "haproxy", "haproxy.cfg")
    haproxy_text = "\n".join(
        line.split("#", 1)[0] for line in open(haproxy_cfg, encoding="utf-8").read().splitlines()
    )
    lb_env = {k: str(v) for k, v in (services.get("lb", {}).get("environment") or {}).items()}
    wanted_vars = set(re.findall(r'"\$\{([A-Z0-9_]+)\}"', haproxy_text))
    if wanted_vars - set(lb_env):
        problem("docker-compose.yml", f"lb does not set {sorted(wanted_vars - set(lb_env))}, which haproxy.cfg reads")
    servers = sorted({lb_env.get(v, "?").split(":")[0] for v in re.findall(r'^\s*server\s+\S+\s+"\$\{([A-Z0-9_]+)\}"', haproxy_text, re.M)})
    if servers != nodes:
        problem(rel(haproxy_cfg), f"its servers (from lb's environment) are {servers}, not the compose nodes {nodes}")
    prometheus = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus", "prometheus.yml")))
    jobs = {job["job_name"]: job for job in prometheus.get("scrape_configs", [])}
    targets = sorted(
        t.split(":")[0]
        for group in jobs.get("floodgate", {}).get("static_configs", [])
        for t in group.get("targets", [])
    )
    if targets != nodes:
        problem("deploy/prometheus/prometheus.yml", f"job floodgate scrapes {targets}, not {nodes}")
    step("deploy/haproxy/haproxy.cfg: haproxy -c")
    haproxy = next((p for p in ["/usr/sbin/haproxy", "/usr/bin/haproxy"] if os.access(p, os.X_OK)), None)
    if haproxy is None:
        print("  skipped: haproxy is not installed here (apt-get install haproxy)")
    else:
        # Compose's node names resolve only on its network: loopback
        # addresses stand in for them, which checks everything else.
        env = {name: f"127.0.0.1:{18000 + i}" for i, name in enumerate(sorted(wanted_vars))}
        result = run([haproxy, "-c", "-f", haproxy_cfg], env={"PATH": "/usr/bin:/bin", **env})
        warnings = [line for line in (result.stdout + result.stderr).splitlines() if "WARNING" in line or "ALERT" in line]
        if result.returncode != 0 or warnings:
            problem(rel(haproxy_cfg), (result.stdout + result.stderr).strip())
        else:
            print("  Configuration file is valid")


def seconds(text):
    """A humantime-style duration ("30s", "1m", "40s") in seconds."""
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)\s*(ms|s|m|h)", str(text)):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


# --- Kubernetes ---------------------------------------------------------------


def kustomize(directory):
    result = run(["kubectl", "kustomize", directory])
    if result.returncode != 0:
        problem(rel(directory), "kubectl kustomize:\n" + result.stderr.strip())
        return None
    return result.stdout


def kubernetes(venv_bin, floodgate, version, work):
    secret_path = os.path.join(K8S, "base", "secret.example.yaml")
    secret = yaml.safe_load(open(secret_path, encoding="utf-8"))
    secret_env = {
        name: ("0123456789abcdef0123456789abcdef" if "KEY" in name else value or "check")
        for name, value in (secret.get("stringData") or {}).items()
    }
    # Every overlay, and the large one with the optional components.
    variants = {name: os.path.join(K8S, "overlays", name) for name in OVERLAYS}
    everything = os.path.join(work, "large-with-components")
    os.makedirs(everything, exist_ok=True)
    with open(os.path.join(everything, "kustomization.yaml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(variants["large"], everything)],
                "components": [
                    os.path.relpath(os.path.join(K8S, "components", c), everything) for c in COMPONENTS
                ],
            },
            handle,
        )
    variants["large + components"] = everything
    for name, directory in variants.items():
        step(f"kubernetes {name}: kubectl kustomize, kubernetes-validate --strict (Kubernetes {version})")
        rendered = kustomize(directory)
        if rendered is None:
            continue
        documents = [d for d in yaml.safe_load_all(rendered) if d]
        kept = []
        for document in documents:
            if document.get("kind") in CRD_KINDS:
                print(f"  skipped {document['kind']}/{document['metadata']['name']}: a CRD, no schema")
            else:
                kept.append(document)
        path = os.path.join(work, f"{name.replace(' ', '').replace('+', '-')}.yaml")
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump_all(kept, handle, sort_keys=False)
        if validate_manifests(venv_bin, version, path, f"kubernetes {name}"):
            try:
                manifests(name, kept, floodgate, secret_env, work)
            except (KeyError, IndexError, TypeError, StopIteration) as error:
                problem(f"kubernetes {name}", f"a field the checks read is missing or malformed: {error!r}")
    step(f"{rel(secret_path)}: kubernetes-validate --strict (a template, not rendered)")
    validate_manifests(venv_bin, version, secret_path, rel(secret_path))


def validate_manifests(venv_bin, version, path, where):
    result = run([tool(venv_bin, "kubernetes-validate"), "--strict", "-k", version, path])
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or "Couldn't find schema" in output or "ERROR" in output:
        problem(where, "\n".join(line for line in output.splitlines() if not line.startswith("INFO")))
        return False
    passed = [line for line in output.splitlines() if "passed" in line]
    kinds = [re.search(r"resource (\S+) against", line).group(1) for line in passed]
    print(f"  {len(passed)} passed: {', '.join(kinds)}")
    return True


def manifests(name, documents, floodgate, secret_env, work):
    """What the schemas cannot say: the pieces agree with each other and the config."""
    where = f"kubernetes {name}"
    by_kind = {}
    for document in documents:
        by_kind.setdefault(document["kind"], []).append(document)
    deployment = by_kind["Deployment"][0]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]

    def selects(selector):
        return all(labels.get(k) == v for k, v in selector.items())

    if not selects(deployment["spec"]["selector"]["matchLabels"]):
        problem(where, "the Deployment's selector does not match its pods")
    for kind in ["Service", "PodDisruptionBudget"]:
        for document in by_kind.get(kind, []):
            selector = document["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            if not selects(selector):
                problem(where, f"{kind}/{document['metadata']['name']} does not select the pods")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != ("Deployment", deployment["metadata"]["name"]):
            problem(where, f"the HPA scales {ref}, not the Deployment")
        behavior = hpa["spec"].get("behavior", {})
        if behavior.get("scaleUp", {}).get("stabilizationWindowSeconds") != 0:
            problem(where, "the HPA's scale-up is not immediate (stabilizationWindowSeconds 0)")
        if behavior.get("scaleDown", {}).get("stabilizationWindowSeconds", 0) < 300:
            problem(where, "the HPA's scale-down stabilisation window is under 300 s")
        metrics = {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
        if metrics != {"cpu", "memory"}:
            problem(where, f"the HPA scales on {metrics}, not cpu and memory")
        print(f"  HPA {hpa['spec']['minReplicas']}-{hpa['spec']['maxReplicas']} pods on "
              + ", ".join(m.get("resource", m.get("pods", {}).get("metric", {})).get("name", "?")
                          for m in hpa["spec"]["metrics"]))
    if container["readinessProbe"]["httpGet"]["path"] != "/health/ready":
        problem(where, "readiness is not /health/ready")
    if container["livenessProbe"]["httpGet"]["path"] != "/health":
        problem(where, "liveness is not /health")
    security = container.get("securityContext", {})
    if not security.get("readOnlyRootFilesystem") or not pod["spec"]["securityContext"].get("runAsNonRoot"):
        problem(where, "the pod is not non-root with a read-only root filesystem")
    for port_ref in [container["readinessProbe"]["httpGet"]["port"], container["livenessProbe"]["httpGet"]["port"]]:
        if port_ref not in [p["name"] for p in container["ports"]]:
            problem(where, f"a probe names port {port_ref!r}, which the container lacks")
    for ingress in by_kind.get("Ingress", []):
        annotations = ingress["metadata"].get("annotations", {})
        if int(annotations.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "60")) < 3600:
            problem(where, f"Ingress/{ingress['metadata']['name']}: read timeout under an hour (WebSocket)")
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]["name"]
                if backend not in [s["metadata"]["name"] for s in by_kind["Service"]]:
                    problem(where, f"Ingress/{ingress['metadata']['name']} sends {path['path']} to no Service")
                if path["path"].startswith("/socket.io") and \
                        annotations.get("nginx.ingress.kubernetes.io/affinity") != "cookie":
                    problem(where, "Socket.IO's ingress has no cookie affinity (long-polling needs it)")
    # The config in the ConfigMap the pods mount: the binary accepts it with
    # the Secret template's variables, and its sizes match the pod's.
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "config")
    config_maps = {c["metadata"]["name"]: c for c in by_kind["ConfigMap"]}
    config_map = config_maps.get(volume["configMap"]["name"])
    if config_map is None:
        problem(where, f"the pods mount ConfigMap {volume['configMap']['name']}, which is not rendered")
        return
    path = os.path.join(work, f"{name.replace(' ', '').replace('+', '-')}.floodgate.toml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(config_map["data"]["floodgate.toml"])
    missing = references(path) - set(secret_env)
    if missing:
        problem(where, f"the config names {sorted(missing)}, which secret.example.yaml lacks")
    if container.get("envFrom", [{}])[0].get("secretRef", {}).get("name") != "floodgate-secrets":
        problem(where, "the container does not take its environment from the floodgate-secrets Secret")
    config = check_config(floodgate, path, secret_env, f"{where} ConfigMap floodgate.toml")
    if config is None:
        return
    grace = seconds(config.get("server", {}).get("shutdown_grace", "30s"))
    grace += seconds(config.get("server", {}).get("drain_delay", "0s"))
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    termination = pod["spec"]["terminationGracePeriodSeconds"]
    if termination < pre_stop + grace + 5:
        problem(where, f"terminationGracePeriodSeconds {termination} < preStop {pre_stop} + drain_delay + shutdown_grace {grace:g} + 5")
    liveness = container["livenessProbe"]
    if liveness["periodSeconds"] * liveness["failureThreshold"] <= termination:
        problem(where, "liveness would fail during the drain (period × failures ≤ the grace period)")
    cpu = str(container["resources"]["limits"]["cpu"])
    cpus = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    workers = config.get("server", {}).get("workers")
    if workers is not None and workers != max(1, int(cpus)):
        problem(where, f"[server] workers {workers} does not match the CPU limit {cpu}")
    memory = container["resources"]["limits"]["memory"]
    memory_bytes = int(memory[:-2]) * {"Mi": 2**20, "Gi": 2**30}[memory[-2:]]
    cache = config.get("cache", {}).get("max_bytes", 256 * 2**20)
    if cache > memory_bytes * 0.5:
        problem(where, f"[cache] max_bytes {cache} is over half the memory limit {memory}")
    print(f"  drain: preStop {pre_stop} s + drain_delay + shutdown_grace {grace:g} s + 5 <= terminationGracePeriodSeconds "
          f"{termination}; workers {workers} = CPU limit {cpu}; cache {cache >> 20} MiB of {memory}")


# --- Prometheus and Grafana ---------------------------------------------------


def selectors(expression):
    """The metric names an expression reads."""
    names = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.append(node.name)
        for matcher in getattr(getattr(node, "matchers", None), "matchers", []) or []:
            if getattr(matcher, "name", None) == "__name__":
                names.append(matcher.value)

    promql_parser.walk(promql_parser.parse(expression), visit)
    return names


def prometheus():
    path = os.path.join(DEPLOY, "prometheus", "prometheus.yml")
    step(f"{rel(path)}: structure")
    config = yaml.safe_load(open(path, encoding="utf-8"))
    for rule_file in config.get("rule_files", []):
        if os.path.basename(rule_file) != "alerts.yml":
            problem(rel(path), f"rule file {rule_file} is not alerts.yml")
    for job in config.get("scrape_configs", []):
        for key in ["job_name", "static_configs"]:
            if key not in job:
                problem(rel(path), f"a scrape config lacks {key}")
    for key in ["scrape_interval", "evaluation_interval"]:
        if not DURATION.match(str(config.get("global", {}).get(key, ""))):
            problem(rel(path), f"global.{key} is not a duration")
    path = os.path.join(DEPLOY, "prometheus", "alerts.yml")
    step(f"{rel(path)}: every rule's shape, every expression parsed (promql-parser)")
    rules = yaml.safe_load(open(path, encoding="utf-8"))
    names, used = set(), {}
    allowed = {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
    for group in rules.get("groups", []):
        if set(group) - {"name", "rules", "interval"} or "name" not in group:
            problem(rel(path), f"group {group.get('name')} has unknown keys {set(group) - {'name', 'rules', 'interval'}}")
        for rule in group.get("rules", []):
            alert = rule.get("alert", "?")
            where = f"{rel(path)} {alert}"
            if set(rule) - allowed:
                problem(where, f"unknown keys {sorted(set(rule) - allowed)}")
            if alert in names:
                problem(where, "alert name used twice")
            names.add(alert)
            if "for" in rule and not DURATION.match(str(rule["for"])):
                problem(where, f"for: {rule['for']!r} is not a duration")
            if rule.get("labels", {}).get("severity") not in SEVERITIES:
                problem(where, f"severity is not one of {sorted(SEVERITIES)}")
            for key in ["summary", "description"]:
                if not rule.get("annotations", {}).get(key):
                    problem(where, f"no {key} annotation")
            try:
                for metric in selectors(rule["expr"]):
                    used.setdefault(metric, set()).add(f"alert {alert}")
            except (ValueError, KeyError) as error:
                problem(where, f"expr does not parse: {error}")
    print(f"  {len(names)} alerts")
    return used


GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$instance": ".*"}


def grafana():
    path = os.path.join(DEPLOY, "grafana", "floodgate.json")
    step(f"{rel(path)}: JSON, panel layout, every query parsed (promql-parser)")
    dashboard = json.load(open(path, encoding="utf-8"))
    used = {}
    for key in ["title", "uid", "panels", "schemaVersion", "templating"]:
        if key not in dashboard:
            problem(rel(path), f"no {key}")
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    for needed in ["datasource", "instance"]:
        if needed not in variables:
            problem(rel(path), f"no ${needed} variable")
    ids, cells, count = set(), set(), 0
    for panel in dashboard.get("panels", []):
        where = f"{rel(path)} panel {panel.get('title')!r}"
        if panel.get("id") in ids:
            problem(where, f"id {panel.get('id')} used twice")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if grid.get("x", 0) + grid.get("w", 0) > 24:
            problem(where, "wider than the 24-column grid")
        for x in range(grid.get("x", 0), grid.get("x", 0) + grid.get("w", 0)):
            for y in range(grid.get("y", 0), grid.get("y", 0) + grid.get("h", 0)):
                if (x, y) in cells:
                    problem(where, f"overlaps another panel at ({x}, {y})")
                cells.add((x, y))
        if panel.get("type") == "row":
            continue
        count += 1
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problem(where, "its data source is not the $datasource variable")
        if not panel.get("targets"):
            problem(where, "no query")
        for target in panel.get("targets", []):
            expression = target.get("expr", "")
            for variable, value in GRAFANA_VARIABLES.items():
                expression = expression.replace(variable, value)
            if "$" in expression.replace("$labels", ""):
                problem(where, f"unknown variable in {target.get('expr')!r}")
            try:
                for metric in selectors(expression):
                    used.setdefault(metric, set()).add(f"panel {panel.get('title')!r}")
            except ValueError as error:
                problem(where, f"query does not parse: {error}\n  {target.get('expr')}")
    print(f"  {count} panels")
    # Provisioning: the data source and the folder compose mounts the dashboard in.
    datasource = yaml.safe_load(open(os.path.join(DEPLOY, "grafana/provisioning/datasources/prometheus.yml")))
    if [d.get("type") for d in datasource.get("datasources", [])] != ["prometheus"]:
        problem("deploy/grafana/provisioning/datasources/prometheus.yml", "not one Prometheus data source")
    provider = yaml.safe_load(open(os.path.join(DEPLOY, "grafana/provisioning/dashboards/floodgate.yml")))
    folder = provider["providers"][0]["options"]["path"]
    compose_file = yaml.safe_load(open(os.path.join(ROOT, "docker-compose.yml"))) or {}
    mounts = (compose_file.get("services") or {}).get("grafana", {}).get("volumes", [])
    if f"./deploy/grafana/floodgate.json:{folder}/floodgate.json:ro" not in mounts:
        problem("docker-compose.yml", f"grafana does not mount the dashboard into {folder}")
    return used


def known_metrics():
    """Every floodgate_* name Floodgate's source defines (a string literal)."""
    names = set()
    for directory, _, files in os.walk(os.path.join(ROOT, "crates", "floodgate-core", "src")):
        for name in files:
            if name.endswith(".rs") and "tests" not in name:
                text = open(os.path.join(directory, name), encoding="utf-8").read()
                names.update(re.findall(r'"(floodgate_[a-z0-9_]+)"', text))
    return names


def metric_names(used):
    step("metric names: every floodgate_* series in the dashboard and alerts is one Floodgate defines")
    known = known_metrics()
    for metric, places in sorted(used.items()):
        if not metric.startswith("floodgate_"):
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", metric)
        if metric not in known and base not in known:
            problem("metric names", f"{metric} (in {', '.join(sorted(places))}) is not a metric Floodgate defines")
    names = sorted(m for m in used if m.startswith("floodgate_"))
    print(f"  {len(names)} names checked against {len(known)} defined in crates/floodgate-core/src "
          "(crates/floodgate/tests/api/deploy.rs checks them against a running node's /metrics)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv-bin", required=True)
    parser.add_argument("--floodgate", required=True)
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    started = time.monotonic()
    os.makedirs(args.work, exist_ok=True)

    def guarded(name, check, *check_args):
        # A file too broken for a check's reading is a problem, not a crash.
        try:
            return check(*check_args)
        except Exception as error:  # noqa: BLE001
            problem(name, f"cannot be read as expected: {type(error).__name__}: {error}")
            return {}

    guarded("Dockerfile", dockerfile, args.venv_bin)
    guarded("docker-compose.yml", compose, args.venv_bin, args.floodgate)
    guarded("kubernetes", kubernetes, args.venv_bin, args.floodgate, args.kubernetes_version, args.work)
    used = guarded("deploy/prometheus", prometheus) or {}
    for metric, places in (guarded("deploy/grafana", grafana) or {}).items():
        used.setdefault(metric, set()).update(places)
    metric_names(used)
    elapsed = time.monotonic() - started
    if problems:
        print(f"validate: FAILED, {len(problems)} problem{'s' if len(problems) > 1 else ''}:", file=sys.stderr)
        for line in problems:
            print(f"- {line}", file=sys.stderr)
        sys.exit(1)
    print(f"validate: ok ({elapsed:.1f} s)")


if __name__ == "__main__":
    main()
