"""Shared helpers for the packaging tests: the built binary, Kubernetes schema validation,
and the safety properties every install (Helm chart or kustomize) must have."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "pullsecret-injector"
KUBE_VERSION = "1.33.0"

# Kinds defined by CRDs: kubernetes-validate has no schema for them, so they are skipped
# here explicitly and their key fields asserted by the tests instead.
CRD_KINDS = {
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "ClusterIssuer"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}

# Flags of `pullsecret-injector serve` that the manifests may pass (src/cli.rs); each must
# also be in `serve --help` (test_serve_flags_exist in test_deploy.py).
SERVE_FLAGS = {
    "--policy-configmap",
    "--namespace",
    "--tls-cert",
    "--tls-key",
    "--listen",
    "--admin-listen",
    "--copy-deadline",
    "--reload-interval",
    "--shutdown-grace",
    "--header-read-timeout",
    "--body-read-timeout",
    "--idle-timeout",
    "--max-connections",
    "--max-concurrent-streams",
    "--max-concurrent-reviews",
    "--max-body-memory",
    "--tls-server-name",
    "--log-format",
    "--prune-grace",
    "--no-prune",
}

# The SERVE_FLAGS that take no value (clap `SetTrue`: `--no-prune=true` is refused).
SWITCH_FLAGS = {"--no-prune"}

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def binary_path() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "pullsecret-injector"


@pytest.fixture(scope="session")
def binary() -> Path:
    """The debug build of the webhook; a missing binary is a failure, not a skip."""
    path = binary_path()
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `cargo build` first (scripts/test does)")
    return path


def run_check(binary: Path, policy_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy_text)
    return subprocess.run(
        [str(binary), "check", "--policy", str(policy_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def help_flags(binary: Path, *command: str) -> set[str]:
    """The long flags `pullsecret-injector COMMAND --help` lists."""
    result = subprocess.run([str(binary), *command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", result.stdout))


def load_all(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate_objects(objects: list[dict]) -> list[dict]:
    """Validate every object against the Kubernetes schemas (strict: unknown fields are
    errors). Returns the CRD-kind objects, which have no schema here."""
    skipped = []
    for obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in CRD_KINDS:
            skipped.append(obj)
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            name = obj.get("metadata", {}).get("name")
            path = "/".join(str(p) for p in err.path)
            raise AssertionError(f"{obj['kind']} {name}: {path}: {err.message}") from None
    return skipped


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def duration_ms(text: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    assert m, f"{text!r} is not a duration"
    return int(m.group(1)) * {"ms": 1, "s": 1000, "m": 60000}[m.group(2)]


def container_args(deployment: dict) -> dict[str, str]:
    """The `--flag=value` arguments of the webhook container, as a dict."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = {}
    for arg in container["args"]:
        if arg in SWITCH_FLAGS:
            args[arg] = ""
            continue
        assert arg.startswith("--") and "=" in arg, f"argument {arg!r} is not --flag=value"
        flag, value = arg.split("=", 1)
        args[flag] = value
    return args


def selector_matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def check_install(objects: list[dict], namespace: str, *, failure_policy: str = "Ignore") -> dict:
    """Assert what every install must guarantee. Returns the names that tie it together."""
    deployment = one(objects, "Deployment")
    webhook_config = one(objects, "MutatingWebhookConfiguration")
    service = one(objects, "Service")
    pod = deployment["spec"]["template"]
    pod_spec = pod["spec"]
    pod_labels = pod["metadata"]["labels"]
    (container,) = pod_spec["containers"]
    args = container_args(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    # Everything namespaced lives in the install's namespace.
    for obj in objects:
        if obj["kind"] not in {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "Namespace"}:
            assert obj["metadata"].get("namespace") == namespace, f"{obj['kind']} {obj['metadata']['name']}"

    # Only flags of the CLI contract.
    assert set(args) <= SERVE_FLAGS, set(args) - SERVE_FLAGS
    assert {"--policy-configmap", "--tls-cert", "--tls-key", "--copy-deadline"} <= set(args)
    assert args["--listen"] == f"0.0.0.0:{ports['webhook']}"
    assert args["--admin-listen"] == f"0.0.0.0:{ports['admin']}"
    env = {e["name"]: e for e in container.get("env", [])}
    # --namespace (the webhook's own namespace) and the Events' reportingInstance.
    assert env["POD_NAMESPACE"] == {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    assert env["POD_NAME"] == {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}

    # Availability.
    spec = deployment["spec"]
    assert spec["replicas"] >= 1
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod_spec.get("affinity", {}).get("podAntiAffinity") or pod_spec.get("topologySpreadConstraints")
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    grace_ms = pod_spec["terminationGracePeriodSeconds"] * 1000
    pre_stop_ms = container["lifecycle"]["preStop"]["sleep"]["seconds"] * 1000
    assert grace_ms > pre_stop_ms + duration_ms(args.get("--shutdown-grace", "20s"))
    pdbs = by_kind(objects, "PodDisruptionBudget")
    assert len(pdbs) == 1
    assert selector_matches(pdbs[0]["spec"]["selector"]["matchLabels"], pod_labels)
    assert selector_matches(spec["selector"]["matchLabels"], pod_labels)
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]

    # Hardening.
    psc, csc = pod_spec["securityContext"], container["securityContext"]
    assert psc["runAsNonRoot"] is True and isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert csc["runAsNonRoot"] is True and isinstance(csc["runAsUser"], int) and csc["runAsUser"] > 0
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert csc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod_spec["automountServiceAccountToken"] is True

    # The TLS files come from a mounted Secret directory (no subPath, so renewals show up).
    tls_dir = os.path.dirname(args["--tls-cert"])
    assert os.path.dirname(args["--tls-key"]) == tls_dir
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == tls_dir]
    assert "subPath" not in mount and mount["readOnly"] is True
    (volume,) = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
    tls_secret = volume["secret"]["secretName"]
    assert os.path.basename(args["--tls-cert"]) == "tls.crt"
    assert os.path.basename(args["--tls-key"]) == "tls.key"

    # The Service reaches the webhook port of these Pods.
    assert selector_matches(service["spec"]["selector"], pod_labels)
    service_ports = {p["port"]: p for p in service["spec"]["ports"]}

    # The webhook configuration.
    (hook,) = webhook_config["webhooks"]
    assert hook["failurePolicy"] == failure_policy
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert 1 <= hook["timeoutSeconds"] <= 30
    assert hook["timeoutSeconds"] * 1000 > duration_ms(args["--copy-deadline"]), "copy deadline outlives the webhook timeout"
    assert len(hook["name"].split(".")) >= 3, "webhook names must be fully qualified"
    rules = hook["rules"]
    assert rules == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}
    ]
    svc_ref = hook["clientConfig"]["service"]
    assert svc_ref["name"] == service["metadata"]["name"]
    assert svc_ref["namespace"] == namespace
    assert svc_ref["path"] == "/mutate"
    for segment in svc_ref["path"].strip("/").split("/"):
        assert DNS1123_SUBDOMAIN.match(segment), segment
    target = service_ports[svc_ref.get("port", 443)]["targetPort"]
    assert target in ("webhook", ports["webhook"])

    # Excluded: the webhook's own namespace and kube-system.
    excluded = [
        e
        for e in hook["namespaceSelector"]["matchExpressions"]
        if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"
    ]
    assert excluded, "no namespace exclusion"
    excluded_names = set().union(*(e["values"] for e in excluded))
    assert {namespace, "kube-system"} <= excluded_names

    rbac = check_rbac(objects, namespace, pod_spec["serviceAccountName"], args["--policy-configmap"])
    return {
        "deployment": deployment,
        "webhook": hook,
        "webhook_config": webhook_config,
        "service": service,
        "tls_secret": tls_secret,
        "dns_name": f"{svc_ref['name']}.{namespace}.svc",
        "policy_configmap": args["--policy-configmap"],
        "secret_names": rbac,
    }


def check_rbac(objects: list[dict], namespace: str, service_account: str, policy_configmap: str) -> set[str]:
    """Least privilege. Returns the Secret names the ClusterRole may read."""
    # The webhook's roles are the ones its ServiceAccount is bound to (an install may also
    # hold the unbound, opt-in audit ClusterRole).
    cluster_role = one(objects, "ClusterRole", one(objects, "ClusterRoleBinding")["roleRef"]["name"])
    role = one(objects, "Role", one(objects, "RoleBinding")["roleRef"]["name"])
    for r in (cluster_role, role):
        assert "aggregationRule" not in r, "the webhook's rules are its own, nothing aggregated in"
        assert not any(k.startswith("rbac.authorization.k8s.io/aggregate-to") for k in r["metadata"].get("labels", {}))
    for r in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        for rule in r["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule

    readable: set[str] = set()
    writable: set[str] = set()
    for rule in cluster_role["rules"]:
        if "secrets" not in rule["resources"]:
            continue
        verbs = set(rule["verbs"])
        names = rule.get("resourceNames")
        if verbs & {"get", "list", "watch"}:
            # No cluster-wide read of Secrets, ever.
            assert names, f"Secret read without resourceNames: {rule}"
            readable |= set(names)
        if verbs & {"update", "patch", "delete", "deletecollection"}:
            assert names, f"Secret write without resourceNames: {rule}"
            assert "deletecollection" not in verbs
            writable |= set(names)
        if not names:
            assert verbs == {"create"}, f"unnamed Secret rule may only create: {rule}"
    assert readable and writable == readable
    granted = {(g, res, v) for rule in cluster_role["rules"] for g in rule["apiGroups"] for res in rule["resources"] for v in rule["verbs"]}
    assert {("", "namespaces", "list"), ("", "namespaces", "watch")} <= granted
    assert ("", "namespaces", "get") not in granted, "the namespace cache is a reflector: list and watch only"
    assert ("events.k8s.io", "events", "create") in granted
    assert ("", "events", "create") not in granted, "Events are recorded through events.k8s.io only"
    assert not any(v == "patch" and res == "secrets" for _, res, v in granted), "Secret updates are full PUTs: no patch"
    # ServiceAccount mode: a watch cache, conditional JSON patches, a re-read after a refusal.
    assert {v for _, res, v in granted if res == "serviceaccounts"} == {"get", "list", "watch", "patch"}
    # Pods are only listed, one namespace at a time, when a copy is about to be pruned.
    assert {v for _, res, v in granted if res == "pods"} == {"list"}, "no Pod watch or get"
    assert not any(res == "configmaps" for _, res, _ in granted), "ConfigMaps only through the namespaced Role"

    (cm_rule,) = role["rules"]
    assert cm_rule["resources"] == ["configmaps"] and set(cm_rule["verbs"]) == {"list", "watch"}
    assert cm_rule["resourceNames"] == [policy_configmap]
    assert role["metadata"]["namespace"] == namespace

    for kind, role_kind, role_name in (
        ("ClusterRoleBinding", "ClusterRole", cluster_role["metadata"]["name"]),
        ("RoleBinding", "Role", role["metadata"]["name"]),
    ):
        binding = one(objects, kind)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]
    check_rbac_is_documented(cluster_role, role, readable, policy_configmap)
    return readable


def check_cert_manager_chain(objects: list[dict], names: dict, namespace: str) -> None:
    """Serving Certificate for the webhook's Service, its Secret mounted, the CA injected."""
    certificates = {c["metadata"]["name"]: c for c in by_kind(objects, "Certificate")}
    issuers = {i["metadata"]["name"]: i for i in by_kind(objects, "Issuer")}
    serving = [c for c in certificates.values() if c["spec"]["secretName"] == names["tls_secret"]]
    assert len(serving) == 1, "one Certificate must write the mounted TLS Secret"
    cert = serving[0]
    assert names["dns_name"] in cert["spec"]["dnsNames"]
    assert not cert["spec"].get("isCA")
    assert "server auth" in cert["spec"]["usages"]
    annotations = names["webhook_config"]["metadata"].get("annotations", {})
    assert annotations.get("cert-manager.io/inject-ca-from") == f"{namespace}/{cert['metadata']['name']}"
    assert "caBundle" not in names["webhook"]["clientConfig"]
    ref = cert["spec"]["issuerRef"]
    if ref["kind"] == "Issuer" and ref["name"] in issuers:
        # The private CA chain: selfsigned Issuer -> CA Certificate -> CA Issuer -> serving.
        ca_issuer = issuers[ref["name"]]
        ca_secret = ca_issuer["spec"]["ca"]["secretName"]
        (ca_cert,) = [c for c in certificates.values() if c["spec"]["secretName"] == ca_secret]
        assert ca_cert["spec"]["isCA"] is True
        root = issuers[ca_cert["spec"]["issuerRef"]["name"]]
        assert root["spec"] == {"selfSigned": {}}
        assert ca_secret != names["tls_secret"], "the CA key must not be mounted into the webhook"
    for obj in certificates.values():
        assert obj["metadata"]["namespace"] == namespace


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# The names deploy/RBAC.md's YAML uses, substituted by each install's own.
DOC_SECRET_NAMES = {"gitlab-deploy-token", "ecr-pull"}
DOC_POLICY_CONFIGMAP = "pullsecret-injector-policy"


def documented_rbac() -> list[dict]:
    """The objects of the fenced ```yaml block of deploy/RBAC.md (the contract)."""
    text = (REPO / "deploy" / "RBAC.md").read_text()
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"deploy/RBAC.md must hold exactly one yaml block, found {len(blocks)}"
    return load_all(blocks[0])


def normalized_rules(rules: list[dict], names: dict[frozenset, frozenset] | None = None) -> list[tuple]:
    """Rules as comparable tuples (order of lists and of rules does not matter);
    `names` maps one resourceNames set to another."""
    out = []
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "resourceNames", "verbs"}, rule
        resource_names = frozenset(rule.get("resourceNames", []))
        if names and resource_names in names:
            resource_names = names[resource_names]
        out.append(
            (
                tuple(sorted(rule["apiGroups"])),
                tuple(sorted(rule["resources"])),
                tuple(sorted(resource_names)),
                tuple(sorted(rule["verbs"])),
            )
        )
    assert len(out) == len(set(out)), f"duplicate rules: {rules}"
    return sorted(out)


def check_rbac_is_documented(cluster_role: dict, role: dict, secret_names: set[str], policy_configmap: str) -> None:
    """The webhook's ClusterRole and Role grant exactly the rules of deploy/RBAC.md, with this
    install's Secret names and policy ConfigMap in place of the document's."""
    doc = documented_rbac()
    names = {
        frozenset(DOC_SECRET_NAMES): frozenset(secret_names),
        frozenset({DOC_POLICY_CONFIGMAP}): frozenset({policy_configmap}),
    }
    for actual in (cluster_role, role):
        (documented,) = by_kind(doc, actual["kind"])
        assert normalized_rules(actual["rules"]) == normalized_rules(documented["rules"], names), (
            f"{actual['kind']} {actual['metadata']['name']} differs from deploy/RBAC.md"
        )


def audit_rules(secret_names: set[str], policy_configmap: str) -> list[tuple]:
    """What `pullsecret-injector audit` reads (src/cmd/audit.rs), as normalized rules."""
    return normalized_rules(
        [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": sorted(secret_names), "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods", "serviceaccounts", "namespaces"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [policy_configmap], "verbs": ["get"]},
        ]
    )


def check_audit_role_stands_alone(objects: list[dict], audit_role: dict) -> None:
    """The audit ClusterRole is bound to no one and aggregates into nothing: in particular,
    the webhook's ServiceAccount gains none of it."""
    name = audit_role["metadata"]["name"]
    assert "aggregationRule" not in audit_role
    labels = audit_role["metadata"].get("labels", {})
    assert not [k for k in labels if k.startswith("rbac.authorization.k8s.io/aggregate-to")], labels
    for binding in by_kind(objects, "ClusterRoleBinding") + by_kind(objects, "RoleBinding"):
        assert binding["roleRef"]["name"] != name, f"{binding['kind']} {binding['metadata']['name']} binds the audit role"
    for role in by_kind(objects, "ClusterRole"):
        assert "aggregationRule" not in role, f"ClusterRole {role['metadata']['name']} aggregates"
