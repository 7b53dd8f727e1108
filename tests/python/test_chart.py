"""The Helm chart, rendered and linted by the real Helm engine (helm-python-sdk embeds Helm's
Go SDK), every object validated against the Kubernetes 1.33 schemas."""

from __future__ import annotations

import base64
import datetime
import json
import subprocess

import helm_python as helm
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import (
    CHART,
    DOC_POLICY_CONFIGMAP,
    DOC_SECRET_NAMES,
    REPO,
    audit_rules,
    b64,
    by_kind,
    check_audit_role_stands_alone,
    check_cert_manager_chain,
    check_install,
    check_rbac_is_documented,
    container_args,
    load_all,
    normalized_rules,
    one,
    run_check,
    validate_objects,
)

RELEASE = "psi"
NAMESPACE = "platform-webhooks"


def make_ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


CA_PEM = make_ca_pem()

SEVERAL_SECRETS_POLICY = {
    "sourceNamespace": "registry-credentials",
    "excludeNamespaces": ["kube-system", "kube-public"],
    "rules": [
        {
            "name": "gitlab",
            "registries": ["registry.gitlab.com/acme/"],
            "secret": "gitlab-deploy-token",
            "namespaces": {
                "include": ["team-*"],
                "exclude": ["team-sandbox"],
                "selector": {"matchLabels": {"registry-access": "gitlab"}},
            },
        },
        {"name": "ecr", "registries": ["*.dkr.ecr.*.amazonaws.com"], "secret": "ecr-pull"},
        {"name": "ghcr", "registries": ["ghcr.io/acme"], "secret": "ghcr-pull"},
        {"name": "quay", "registries": ["quay.io/acme/", "quay.io/acme-mirror/"], "secret": "quay-pull"},
        # A second rule with a secret already named: RBAC lists it once.
        {"name": "ecr-eu", "registries": ["123456789012.dkr.ecr.eu-west-1.amazonaws.com"], "secret": "ecr-pull"},
    ],
}

# The example the chart's values.yaml carries commented out (its default is no rules), and
# the policy deploy/RBAC.md is written for.
EXAMPLE_POLICY = {
    "sourceNamespace": "registry-credentials",
    "excludeNamespaces": ["kube-system", "kube-public", "kube-node-lease"],
    "rules": [
        {
            "name": "gitlab",
            "registries": ["registry.gitlab.com/acme/"],
            "secret": "gitlab-deploy-token",
            "namespaces": {"include": ["team-*"], "exclude": ["team-sandbox"]},
        },
        {"name": "ecr", "registries": ["*.dkr.ecr.*.amazonaws.com"], "secret": "ecr-pull"},
    ],
}
EXAMPLE = {"policy": {"spec": EXAMPLE_POLICY}}

VALUE_SETS = {
    "example-policy": EXAMPLE,
    "cert-manager": {**EXAMPLE, "tls": {"mode": "certManager"}},
    "cert-manager-cluster-issuer": {
        **EXAMPLE,
        "tls": {"mode": "certManager", "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}}}
    },
    "existing-secret": {**EXAMPLE, "tls": {"mode": "existingSecret", "existingSecret": {"name": "webhook-serving", "caBundle": CA_PEM.decode()}}},
    "existing-configmap": {
        "policy": {"create": False, "configMapName": "registry-policy", "secretNames": ["harbor-pull", "ecr-pull"]}
    },
    "several-secrets": {
        "policy": {"spec": SEVERAL_SECRETS_POLICY},
        "replicas": 3,
        "priorityClassName": "system-cluster-critical",
        "webhook": {
            "timeoutSeconds": 5,
            "excludeNamespaces": ["kube-system", "monitoring"],
            "namespaceSelector": {"matchExpressions": [{"key": "psi.io/opt-out", "operator": "DoesNotExist"}]},
        },
        "server": {"copyDeadline": "2500ms"},
        "networkPolicy": {
            "enabled": True,
            "webhookFrom": [{"ipBlock": {"cidr": "10.0.0.0/16"}}],
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        },
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    },
    "audit-role": {**EXAMPLE, "audit": {"clusterRole": {"create": True}}},
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart, values: dict) -> tuple[list[dict], str]:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = ""
    objects: list[dict] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
        else:
            objects += load_all(text)
    return objects, notes


@pytest.fixture(scope="module")
def rendered(chart) -> dict[str, tuple[list[dict], str]]:
    return {name: render(chart, values) for name, values in VALUE_SETS.items()}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_chart_lints_clean_in_strict_mode(name):
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE, kube_version="v1.33.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert not problems and not report["errors"], problems or report["errors"]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_object_is_valid_kubernetes_1_33(rendered, name):
    objects, _ = rendered[name]
    skipped = validate_objects(objects)
    kinds = {o["kind"] for o in objects}
    assert {"ServiceAccount", "ClusterRole", "Role", "Deployment", "Service", "MutatingWebhookConfiguration", "PodDisruptionBudget"} <= kinds
    # Only the CRD kinds were left out, and only where this value set asks for them.
    skipped_kinds = {o["kind"] for o in skipped}
    expected = set()
    if VALUE_SETS[name].get("tls", {}).get("mode") == "certManager":
        expected.add("Certificate")
        if not VALUE_SETS[name]["tls"].get("certManager", {}).get("issuerRef"):
            expected.add("Issuer")
    if VALUE_SETS[name].get("metrics", {}).get("serviceMonitor", {}).get("enabled"):
        expected.add("ServiceMonitor")
    assert skipped_kinds == expected


@pytest.mark.parametrize("name", VALUE_SETS)
def test_install_is_safe(rendered, name):
    objects, _ = rendered[name]
    check_install(objects, NAMESPACE)


def test_defaults(rendered):
    objects, _ = rendered["example-policy"]
    names = check_install(objects, NAMESPACE)
    hook = names["webhook"]
    assert hook["timeoutSeconds"] == 3
    args = container_args(names["deployment"])
    assert args["--copy-deadline"] == "1s"
    assert args["--header-read-timeout"] == "10s" and args["--reload-interval"] == "2s"
    assert args["--prune-grace"] == "30s" and "--no-prune" not in args
    assert args["--policy-configmap"] == f"{RELEASE}-pullsecret-injector-policy"
    # The limits against hostile clients (docs/security.md) and the name the apiserver verifies.
    assert args["--max-body-memory"] == "32Mi" and args["--body-read-timeout"] == "5s"
    assert args["--max-connections"] == "256" and args["--idle-timeout"] == "90s"
    assert args["--tls-server-name"].endswith(f".{NAMESPACE}.svc")
    assert names["deployment"]["spec"]["replicas"] == 2
    assert "priorityClassName" not in names["deployment"]["spec"]["template"]["spec"]
    assert not by_kind(objects, "NetworkPolicy") and not by_kind(objects, "ServiceMonitor")
    excluded = hook["namespaceSelector"]["matchExpressions"][0]["values"]
    assert excluded[0] == NAMESPACE and "kube-system" in excluded
    # The policy's secrets, and only them, are readable.
    assert names["secret_names"] == {"gitlab-deploy-token", "ecr-pull"}


def decode_cert(b64_pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(b64_pem))


def test_generated_certificate_is_valid_for_the_service_and_matches_the_ca_bundle(rendered):
    objects, _ = rendered["example-policy"]
    names = check_install(objects, NAMESPACE)
    secret = one(objects, "Secret", names["tls_secret"])
    assert secret["type"] == "kubernetes.io/tls"
    cert = decode_cert(secret["data"]["tls.crt"])
    ca = decode_cert(secret["data"]["ca.crt"])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names["dns_name"] in sans
    assert f"{names['dns_name']}.cluster.local" in sans
    # Signed by the CA the webhook configuration tells the API server to trust.
    cert.verify_directly_issued_by(ca)
    assert base64.b64decode(names["webhook"]["clientConfig"]["caBundle"]) == base64.b64decode(secret["data"]["ca.crt"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    # The key in the Secret belongs to the certificate.
    key = serialization.load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert cert.not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=365)


def test_cert_manager_issues_the_serving_certificate_from_a_private_ca(rendered):
    objects, _ = rendered["cert-manager"]
    names = check_install(objects, NAMESPACE)
    check_cert_manager_chain(objects, names, NAMESPACE)
    assert not by_kind(objects, "Secret"), "cert-manager writes the Secret, the chart must not"
    cert = one(objects, "Certificate", names["tls_secret"])
    assert cert["spec"]["dnsNames"] == [names["dns_name"], f"{names['dns_name']}.cluster.local"]


def test_cert_manager_with_an_existing_issuer_makes_no_ca(rendered):
    objects, _ = rendered["cert-manager-cluster-issuer"]
    names = check_install(objects, NAMESPACE)
    check_cert_manager_chain(objects, names, NAMESPACE)
    assert not by_kind(objects, "Issuer")
    (cert,) = by_kind(objects, "Certificate")
    assert cert["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}


def test_existing_secret_mounts_it_and_trusts_the_given_ca(rendered):
    objects, _ = rendered["existing-secret"]
    names = check_install(objects, NAMESPACE)
    assert names["tls_secret"] == "webhook-serving"
    assert not by_kind(objects, "Secret") and not by_kind(objects, "Certificate")
    assert base64.b64decode(names["webhook"]["clientConfig"]["caBundle"]) == CA_PEM


def test_existing_configmap_takes_rbac_secret_names_from_values(rendered):
    objects, _ = rendered["existing-configmap"]
    names = check_install(objects, NAMESPACE)
    assert not by_kind(objects, "ConfigMap")
    assert names["policy_configmap"] == "registry-policy"
    assert names["secret_names"] == {"harbor-pull", "ecr-pull"}


def test_several_secrets_and_the_optional_objects(rendered):
    objects, notes = rendered["several-secrets"]
    names = check_install(objects, NAMESPACE)
    assert names["secret_names"] == {"gitlab-deploy-token", "ecr-pull", "ghcr-pull", "quay-pull"}
    for rule in one(objects, "ClusterRole")["rules"]:
        if "resourceNames" in rule:
            assert len(rule["resourceNames"]) == len(set(rule["resourceNames"]))
    pod_spec = names["deployment"]["spec"]["template"]["spec"]
    assert pod_spec["priorityClassName"] == "system-cluster-critical"
    assert names["deployment"]["spec"]["replicas"] == 3
    assert names["webhook"]["timeoutSeconds"] == 5
    expressions = names["webhook"]["namespaceSelector"]["matchExpressions"]
    assert set(expressions[0]["values"]) == {NAMESPACE, "kube-system", "monitoring"}
    assert {"key": "psi.io/opt-out", "operator": "DoesNotExist"} in expressions

    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {r["ports"][0]["port"]: r for r in policy["spec"]["ingress"]}
    assert set(rules) == {"webhook", "admin"}
    assert rules["webhook"]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/16"}}]
    assert rules["admin"]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}

    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert "metrics" in {p["name"] for p in names["service"]["spec"]["ports"]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= names["service"]["metadata"]["labels"].items()
    assert "--dry-run=server" in notes and "gitlab-deploy-token" in notes


def test_network_policy_defaults_open_the_webhook_port_only(chart):
    objects, _ = render(chart, {"networkPolicy": {"enabled": True}})
    validate_objects(objects)
    policy = one(objects, "NetworkPolicy")
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "webhook", "protocol": "TCP"}]
    assert "from" not in rule


def test_rendered_policy_configmap_passes_check(rendered, binary, tmp_path):
    for name in ("example-policy", "several-secrets"):
        objects, _ = rendered[name]
        names = check_install(objects, NAMESPACE)
        configmap = one(objects, "ConfigMap", names["policy_configmap"])
        assert set(configmap["data"]) == {"policy.yaml"}
        text = configmap["data"]["policy.yaml"]
        expected = VALUE_SETS[name]["policy"]["spec"]
        assert yaml.safe_load(text) == expected
        result = run_check(binary, text, tmp_path)
        assert result.returncode == 0, f"{name}: check failed: {result.stdout}{result.stderr}"


def test_check_rejects_a_broken_policy(binary, tmp_path):
    # The check above means something only if `check` can fail.
    broken = json.dumps({"sourceNamespace": "x", "rules": [{"name": "a", "registries": [], "secret": "s"}]})
    assert run_check(binary, broken, tmp_path).returncode != 0


def chart_default_policy() -> dict:
    with helm.Chart.load(CHART) as loaded:
        return loaded.values["policy"]["spec"]


def test_bare_install_injects_nothing_and_may_read_no_secret(chart, binary, tmp_path):
    """`helm install` without values: an empty policy, no Secret access, and NOTES that say so."""
    assert chart_default_policy()["rules"] == []
    report = helm.lint(CHART, {}, strict=True, namespace=NAMESPACE, kube_version="v1.33.0")
    assert not [m for m in report["messages"] if m["severity"] >= 2] and not report["errors"]
    for values in ({}, {"audit": {"clusterRole": {"create": True}}}):
        objects, notes = render(chart, values)
        validate_objects(objects)
        # No rule may touch Secrets: an empty resourceNames would mean every Secret.
        for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
            for rule in role["rules"]:
                if "secrets" in rule["resources"]:
                    assert role["metadata"]["name"] == AUDIT_ROLE and rule["verbs"] == ["list"], rule
                assert rule.get("resourceNames", ["x"]), f"empty resourceNames: {rule}"
        configmap = one(objects, "ConfigMap", POLICY_CONFIGMAP)
        policy = yaml.safe_load(configmap["data"]["policy.yaml"])
        assert policy["rules"] == []
        result = run_check(binary, configmap["data"]["policy.yaml"], tmp_path)
        assert result.returncode == 0 and "nothing is injected" in result.stdout, result.stdout + result.stderr
        assert "NOTHING IS INJECTED YET" in notes and "policy.spec.rules" in notes
    # With rules, the NOTES do not say it.
    _, notes = render(chart, EXAMPLE)
    assert "NOTHING IS INJECTED" not in notes


def test_check_helm_values_checks_what_the_chart_deploys(chart, binary, tmp_path):
    """`check --helm-values` reads the same `policy.spec` the chart renders into its ConfigMap."""
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"replicas": 2, **EXAMPLE}))
    result = subprocess.run([str(binary), "check", "--helm-values", str(values)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rules, 2 secrets" in result.stdout
    objects, _ = render(chart, yaml.safe_load(values.read_text()))
    configmap = one(objects, "ConfigMap", POLICY_CONFIGMAP)
    assert yaml.safe_load(configmap["data"]["policy.yaml"]) == EXAMPLE_POLICY


def test_notes_explain_how_to_check_it_works(rendered):
    _, notes = rendered["example-policy"]
    assert "--dry-run=server" in notes
    assert "/readyz" in notes and "/metrics" in notes
    assert f"-n {NAMESPACE} rollout status deployment/{RELEASE}-pullsecret-injector" in notes


INVALID_VALUES = {
    "timeout-too-long": {"webhook": {"timeoutSeconds": 31}},
    "timeout-zero": {"webhook": {"timeoutSeconds": 0}},
    "unknown-failure-policy": {"webhook": {"failurePolicy": "Sometimes"}},
    "side-effects-some": {"webhook": {"sideEffects": "Some"}},
    "unknown-tls-mode": {"tls": {"mode": "manual"}},
    "no-replicas": {"replicas": 0},
    "replicas-as-string": {"replicas": "2"},
    "misspelled-key": {"webhook": {"timeoutSecond": 3}},
    "bad-duration": {"server": {"copyDeadline": "1 second"}},
    "bad-prune-grace": {"server": {"pruneGrace": "30 seconds"}},
    "prune-not-boolean": {"server": {"prune": "no"}},
    "rule-without-registries": {"policy": {"spec": {"sourceNamespace": "creds", "rules": [{"name": "x", "registries": [], "secret": "s"}]}}},
    "existing-configmap-without-secret-names": {"policy": {"create": False, "configMapName": "p"}},
    "existing-secret-without-ca": {"tls": {"mode": "existingSecret", "existingSecret": {"name": "s"}}},
    "audit-create-not-boolean": {"audit": {"clusterRole": {"create": "yes"}}},
    "audit-misspelled-key": {"audit": {"clusterRoles": {"create": True}}},
    "ca-bundle-not-pem": {"tls": {"mode": "existingSecret", "existingSecret": {"name": "s", "caBundle": "not a certificate"}}},
}


@pytest.mark.parametrize("name", INVALID_VALUES)
def test_schema_rejects_bad_values(chart, name):
    values = INVALID_VALUES[name]
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError):
        render(chart, values)
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert report["errors"], "lint must report the schema violation"


INCONSISTENT_VALUES = {
    "copy-deadline-not-shorter-than-timeout": (
        {"webhook": {"timeoutSeconds": 2}, "server": {"copyDeadline": "2s"}},
        "must be shorter than webhook.timeoutSeconds",
    ),
    "copy-deadline-longer-than-timeout": (
        {"server": {"copyDeadline": "4000ms"}},
        "must be shorter than webhook.timeoutSeconds",
    ),
    "grace-period-too-short": ({"terminationGracePeriodSeconds": 20}, "terminationGracePeriodSeconds"),
    # (A policy without rules is no longer refused: test_bare_install_injects_nothing_and_may_read_no_secret.)
}


@pytest.mark.parametrize("name", INCONSISTENT_VALUES)
def test_render_fails_on_inconsistent_values(chart, name):
    values, message = INCONSISTENT_VALUES[name]
    chart.validate_schema(values)  # each value is fine alone
    with pytest.raises(helm.HelmRenderError, match=message):
        render(chart, values)


def test_prune_values_become_serve_flags(chart):
    objects, _ = render(chart, {"server": {"pruneGrace": "5m"}})
    args = container_args(one(objects, "Deployment"))
    assert args["--prune-grace"] == "5m" and "--no-prune" not in args
    objects, _ = render(chart, {"server": {"prune": False}})
    args = container_args(one(objects, "Deployment"))
    assert "--no-prune" in args and "--prune-grace" not in args


def test_copy_deadline_just_under_the_timeout_renders(chart):
    objects, _ = render(chart, {"webhook": {"timeoutSeconds": 2}, "server": {"copyDeadline": "1999ms"}})
    assert container_args(one(objects, "Deployment"))["--copy-deadline"] == "1999ms"


def test_ca_bundle_of_existing_secret_is_base64_of_the_pem(chart):
    objects, _ = render(chart, VALUE_SETS["existing-secret"])
    hook = one(objects, "MutatingWebhookConfiguration")["webhooks"][0]
    assert hook["clientConfig"]["caBundle"] == b64(CA_PEM)


class FakeSecretsAPI:
    """Just enough of kube-apiserver on 127.0.0.1 for Helm's `lookup` of one Secret:
    discovery of the core group and GET of a namespaced Secret, with the apiserver's 404
    Status for a missing one."""

    def __init__(self, secrets: dict[tuple[str, str], dict]):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.secrets = secrets
        self.requests: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                api.requests.append(path)
                parts = path.strip("/").split("/")
                code, body = 404, None
                if path == "/api/v1":
                    code, body = 200, {
                        "kind": "APIResourceList",
                        "apiVersion": "v1",
                        "groupVersion": "v1",
                        "resources": [
                            {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret", "verbs": ["get", "list", "watch"]}
                        ],
                    }
                elif len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "secrets":
                    secret = api.secrets.get((parts[3], parts[5]))
                    if secret is not None:
                        code, body = 200, secret
                    else:
                        body = {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Failure",
                            "message": f'secrets "{parts[5]}" not found',
                            "reason": "NotFound",
                            "details": {"name": parts[5], "kind": "secrets"},
                            "code": 404,
                        }
                if body is None:
                    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def kubeconfig(self) -> str:
        host, port = self.server.server_address
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://{host}:{port}"}}],
                "users": [{"name": "test", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "test"}}],
                "current-context": "fake",
            }
        )

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def render_against(api: FakeSecretsAPI, chart, values: dict) -> list[dict]:
    with helm.Config(kubeconfig_content=api.kubeconfig, namespace=NAMESPACE) as config:
        manifests = config.render(chart, values, name=RELEASE, namespace=NAMESPACE, is_upgrade=True)
    return [o for path, text in manifests.items() if not path.endswith("NOTES.txt") for o in load_all(text)]


def test_generate_mode_reuses_the_installed_certificate_on_upgrade(chart):
    first, _ = render(chart, {})
    installed = one(first, "Secret")
    name = installed["metadata"]["name"]
    api = FakeSecretsAPI({(NAMESPACE, name): {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE}, "type": "kubernetes.io/tls", "data": installed["data"]}})
    try:
        upgraded = render_against(api, chart, {"replicas": 3})
    finally:
        api.close()
    assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}" in api.requests
    assert one(upgraded, "Secret", name)["data"] == installed["data"]
    hook = one(upgraded, "MutatingWebhookConfiguration")["webhooks"][0]
    assert hook["clientConfig"]["caBundle"] == installed["data"]["ca.crt"]
    assert one(upgraded, "Deployment")["spec"]["replicas"] == 3


def test_generate_mode_makes_a_new_certificate_when_the_secret_is_missing_or_incomplete(chart):
    first, _ = render(chart, {})
    installed = one(first, "Secret")
    name = installed["metadata"]["name"]
    incomplete = {k: v for k, v in installed["data"].items() if k != "ca.crt"}
    for stored in ({}, {(NAMESPACE, name): {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE}, "data": incomplete}}):
        api = FakeSecretsAPI(stored)
        try:
            upgraded = render_against(api, chart, {})
        finally:
            api.close()
        assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}" in api.requests
        secret = one(upgraded, "Secret", name)
        assert secret["data"]["tls.crt"] != installed["data"]["tls.crt"]
        cert = decode_cert(secret["data"]["tls.crt"])
        cert.verify_directly_issued_by(decode_cert(secret["data"]["ca.crt"]))
        assert one(upgraded, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]


POLICY_CONFIGMAP = f"{RELEASE}-pullsecret-injector-policy"
AUDIT_ROLE = f"{RELEASE}-pullsecret-injector-audit"


def policy_secret_names(name: str) -> set[str]:
    """The secret names of a value set's policy, from the values (not from the render)."""
    spec = VALUE_SETS[name]["policy"]["spec"]
    return {rule["secret"] for rule in spec["rules"]}


@pytest.mark.parametrize("name", ["example-policy", "several-secrets"])
def test_rbac_is_exactly_the_documented_rbac(rendered, name):
    objects, _ = rendered[name]
    cluster_binding = one(objects, "ClusterRoleBinding")
    binding = one(objects, "RoleBinding")
    cluster_role = one(objects, "ClusterRole", cluster_binding["roleRef"]["name"])
    role = one(objects, "Role", binding["roleRef"]["name"])
    secret_names = policy_secret_names(name)
    if name == "example-policy":
        # The example policy is the one deploy/RBAC.md is written for.
        assert secret_names == DOC_SECRET_NAMES
    check_rbac_is_documented(cluster_role, role, secret_names, POLICY_CONFIGMAP)
    # And nothing else is granted to anyone.
    assert len(by_kind(objects, "ClusterRole")) == 1 and len(by_kind(objects, "Role")) == 1


def test_rbac_comparison_notices_an_extra_verb(rendered):
    # The comparison above must be able to fail: the old core-events grant is caught.
    objects, _ = rendered["example-policy"]
    cluster_role = one(objects, "ClusterRole")
    widened = {**cluster_role, "rules": cluster_role["rules"] + [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]}
    with pytest.raises(AssertionError, match="differs from deploy/RBAC.md"):
        check_rbac_is_documented(widened, one(objects, "Role"), DOC_SECRET_NAMES, POLICY_CONFIGMAP)


def test_default_install_has_no_audit_role(rendered):
    for name in VALUE_SETS:
        if name == "audit-role":
            continue
        objects, _ = rendered[name]
        assert not [r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"] == AUDIT_ROLE], name


def test_audit_role_grants_what_audit_reads_and_is_bound_to_no_one(rendered, chart):
    objects, notes = rendered["audit-role"]
    names = check_install(objects, NAMESPACE)  # the webhook's own RBAC is unchanged
    assert f"--clusterrole={AUDIT_ROLE} --group=" in notes and "every Secret" in notes
    assert "-audit" not in rendered["example-policy"][1]
    audit_role = one(objects, "ClusterRole", AUDIT_ROLE)
    check_audit_role_stands_alone(objects, audit_role)
    assert normalized_rules(audit_role["rules"]) == audit_rules(DOC_SECRET_NAMES, POLICY_CONFIGMAP)
    # The webhook's ServiceAccount is bound to its own ClusterRole only.
    (binding,) = by_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] != AUDIT_ROLE
    assert names["secret_names"] == DOC_SECRET_NAMES

    # With an existing ConfigMap, the names come from the values as for the webhook.
    objects, _ = render(chart, {**VALUE_SETS["existing-configmap"], "audit": {"clusterRole": {"create": True}}})
    validate_objects(objects)
    audit_role = one(objects, "ClusterRole", AUDIT_ROLE)
    check_audit_role_stands_alone(objects, audit_role)
    assert normalized_rules(audit_role["rules"]) == audit_rules({"harbor-pull", "ecr-pull"}, "registry-policy")


def test_audit_role_of_the_chart_and_of_deploy_agree(rendered):
    objects, _ = rendered["audit-role"]
    chart_rules = one(objects, "ClusterRole", AUDIT_ROLE)["rules"]
    (plain,) = load_all((REPO / "deploy/audit/clusterrole.yaml").read_text())
    assert normalized_rules(plain["rules"]) == normalized_rules(
        chart_rules, {frozenset({POLICY_CONFIGMAP}): frozenset({DOC_POLICY_CONFIGMAP})}
    )


TOKEN_POLICY = {
    "sourceNamespace": "registry-credentials",
    "tokenSources": [
        {"secret": "ecr-pull", "ecr": {"region": "eu-west-1"}},
        {"secret": "gar-pull", "google": {"registries": ["europe-docker.pkg.dev"]}},
        {"secret": "acr-pull", "azure": {"registry": "acme.azurecr.io"}},
    ],
    "rules": [{"name": "ecr", "registries": ["*.dkr.ecr.*.amazonaws.com"], "secret": "ecr-pull"}],
}


def test_cloud_identity_values_reach_the_service_account_and_the_pod(chart):
    """IRSA, GKE Workload Identity and Azure Workload Identity are annotations on the
    ServiceAccount (plus Azure's Pod label); EKS Pod Identity is an association and needs none.
    The token Secrets, handed out by a rule or not, are readable and writable by name."""
    values = {
        "policy": {"spec": TOKEN_POLICY},
        "serviceAccount": {"annotations": {"team": "platform"}},
        "cloudIdentity": {
            "aws": {"roleArn": "arn:aws:iam::123456789012:role/pullsecret-injector"},
            "gcp": {"serviceAccount": "puller@acme-prod.iam.gserviceaccount.com"},
            "azure": {
                "clientId": "11111111-2222-3333-4444-555555555555",
                "tenantId": "99999999-8888-7777-6666-555555555555",
            },
        },
    }
    objects, _ = render(chart, values)
    validate_objects(objects)
    names = check_install(objects, NAMESPACE)
    account = one(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "team": "platform",
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/pullsecret-injector",
        "iam.gke.io/gcp-service-account": "puller@acme-prod.iam.gserviceaccount.com",
        "azure.workload.identity/client-id": "11111111-2222-3333-4444-555555555555",
        "azure.workload.identity/tenant-id": "99999999-8888-7777-6666-555555555555",
    }
    pod = names["deployment"]["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert names["secret_names"] == {"ecr-pull", "gar-pull", "acr-pull"}

    # Without cloud identity values: no identity annotation, no Azure label.
    objects, _ = render(chart, {"policy": {"spec": TOKEN_POLICY}})
    account = one(objects, "ServiceAccount")
    assert not (account["metadata"].get("annotations") or {}), account["metadata"]
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert "azure.workload.identity/use" not in labels
