"""The plain manifests (`kubectl kustomize deploy/` and the cert-manager overlay), the
documented manual-certificate commands, the Dockerfile, and the certificates left out of git."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import jsonpatch
import pytest
import yaml

from conftest import (
    REPO,
    SERVE_FLAGS,
    audit_rules,
    b64,
    by_kind,
    check_audit_role_stands_alone,
    check_cert_manager_chain,
    check_install,
    container_args,
    documented_rbac,
    help_flags,
    load_all,
    normalized_rules,
    one,
    run_check,
    validate_objects,
)

NAMESPACE = "pullsecret-injector"
OVERLAYS = {"manual-certs": "deploy", "cert-manager": "deploy/cert-manager"}


def kustomize(directory: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed to render deploy/"
    result = subprocess.run([kubectl, "kustomize", str(REPO / directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return load_all(result.stdout)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: kustomize(directory) for name, directory in OVERLAYS.items()}


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_object_is_valid_kubernetes_1_33(rendered, name):
    objects = rendered[name]
    skipped = validate_objects(objects)
    expected = {"Certificate", "Issuer"} if name == "cert-manager" else set()
    assert {o["kind"] for o in skipped} == expected


@pytest.mark.parametrize("name", OVERLAYS)
def test_install_is_safe(rendered, name):
    objects = rendered[name]
    names = check_install(objects, NAMESPACE)
    namespace = one(objects, "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert names["webhook"]["timeoutSeconds"] == 3
    assert container_args(names["deployment"])["--copy-deadline"] == "1s"
    assert names["deployment"]["spec"]["replicas"] == 2
    image = names["deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"[a-z0-9.\-/]+:[0-9][\w.\-]*", image), image


def test_policy_configmap_passes_check_and_rbac_names_its_secrets(rendered, binary, tmp_path):
    objects = rendered["manual-certs"]
    names = check_install(objects, NAMESPACE)
    configmap = one(objects, "ConfigMap", names["policy_configmap"])
    assert set(configmap["data"]) == {"policy.yaml"}
    text = configmap["data"]["policy.yaml"]
    assert text == (REPO / "deploy/base/policy.yaml").read_text()
    policy = yaml.safe_load(text)
    # RBAC resourceNames are kept by hand in rbac.yaml: they must be the policy's secrets.
    assert names["secret_names"] == {rule["secret"] for rule in policy["rules"]}
    result = run_check(binary, text, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cert_manager_overlay_issues_the_certificate_the_pods_mount(rendered):
    objects = rendered["cert-manager"]
    names = check_install(objects, NAMESPACE)
    check_cert_manager_chain(objects, names, NAMESPACE)
    cert = one(objects, "Certificate", "pullsecret-injector-tls")
    assert cert["spec"]["dnsNames"] == [names["dns_name"], f"{names['dns_name']}.cluster.local"]
    assert not by_kind(objects, "Secret")


def readme_patch_paths() -> list[str]:
    text = (REPO / "certs/README.md").read_text()
    return re.findall(r'\\"path\\":\\"([^"\\]+)\\"', text)


def test_documented_ca_bundle_patch_applies_to_the_manual_install(rendered):
    objects = rendered["manual-certs"]
    names = check_install(objects, NAMESPACE)
    config = names["webhook_config"]
    assert "caBundle" not in names["webhook"]["clientConfig"], "the base leaves caBundle to the documented patch"
    assert "annotations" not in config["metadata"] or "cert-manager.io/inject-ca-from" not in config["metadata"]["annotations"]
    paths = readme_patch_paths()
    assert paths and set(paths) == {"/webhooks/0/clientConfig/caBundle"}
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    patched = jsonpatch.apply_patch(config, [{"op": "add", "path": paths[0], "value": b64(pem)}])
    validate_objects([patched])
    assert patched["webhooks"][0]["clientConfig"]["caBundle"] == b64(pem)
    # The documented Secret is the one the Deployment mounts, made for the documented Service.
    readme = (REPO / "certs/README.md").read_text()
    assert f"-n {NAMESPACE} create secret tls {names['tls_secret']}" in readme
    service = names["service"]["metadata"]["name"]
    assert f"certs --service {service} --namespace {NAMESPACE} --out certs/out" in readme
    assert f"kubectl patch mutatingwebhookconfiguration {config['metadata']['name']} " in readme


def test_dockerfile_passes_hadolint_and_runs_the_server_unprivileged():
    hadolint = shutil.which("hadolint") or str(REPO / ".venv/bin/hadolint")
    result = subprocess.run([hadolint, "--failure-threshold", "style", str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) >= 2, "multi-stage build"
    assert stages[-1].startswith(("gcr.io/distroless/", "scratch")), stages[-1]
    final = text[text.rindex("\nFROM ") :]
    assert re.search(r"^USER 65532(:65532)?$", final, re.M)
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/pullsecret-injector", "serve"\]$', final, re.M)
    copies = re.findall(r"^COPY .*$", final, re.M)
    assert len(copies) == 1 and "pullsecret-injector" in copies[0], "only the binary"
    assert "--release" in text and "--locked" in text
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignored, "allowlist: ignore everything, then name what the build needs"
    assert not any(line.startswith("!target") or line.startswith("!.venv") for line in ignored)


def test_generated_keys_are_ignored_by_git():
    for path in ("certs/out/tls.key", "certs/out/tls.crt", "certs/out/ca.crt", "certs/new/tls.key", "certs/tls.key"):
        result = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, timeout=30)
        assert result.returncode == 0, f"{path} is not ignored by git"
    result = subprocess.run(["git", "check-ignore", "-q", "certs/README.md"], cwd=REPO, timeout=30)
    assert result.returncode == 1, "certs/README.md must stay tracked"


def test_certs_subcommand_makes_what_the_manual_install_needs(rendered, binary, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    names = check_install(rendered["manual-certs"], NAMESPACE)
    service = names["service"]["metadata"]["name"]
    out = tmp_path / "out"
    result = subprocess.run(
        [str(binary), "certs", "--service", service, "--namespace", NAMESPACE, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    key = serialization.load_pem_private_key((out / "tls.key").read_bytes(), password=None)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names["dns_name"] in sans
    cert.verify_directly_issued_by(ca)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


RBAC_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


@pytest.mark.parametrize("name", OVERLAYS)
def test_rbac_is_exactly_the_documented_rbac(rendered, name):
    # deploy/RBAC.md's YAML is written for deploy/: same objects, names, rules and subjects.
    objects = rendered[name]
    documented = documented_rbac()
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(key(o) for o in objects if o["kind"] in RBAC_KINDS) == sorted(key(o) for o in documented)
    for doc in documented:
        actual = one(objects, doc["kind"], doc["metadata"]["name"])
        assert actual["metadata"].get("namespace") == doc["metadata"].get("namespace")
        if "rules" in doc:
            assert "aggregationRule" not in actual
            assert normalized_rules(actual["rules"]) == normalized_rules(doc["rules"]), f"{key(doc)} differs from deploy/RBAC.md"
        else:
            assert actual["roleRef"] == doc["roleRef"] and actual["subjects"] == doc["subjects"], key(doc)


def test_audit_role_is_opt_in_and_covers_the_policy(rendered):
    for objects in rendered.values():
        assert not [r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"] == "pullsecret-injector-audit"]
    text = (REPO / "deploy/audit/clusterrole.yaml").read_text()
    (audit_role,) = load_all(text)
    validate_objects([audit_role])
    assert audit_role["kind"] == "ClusterRole" and audit_role["metadata"]["name"] == "pullsecret-injector-audit"
    check_audit_role_stands_alone(rendered["manual-certs"] + [audit_role], audit_role)
    policy = yaml.safe_load((REPO / "deploy/base/policy.yaml").read_text())
    names = check_install(rendered["manual-certs"], NAMESPACE)
    assert normalized_rules(audit_role["rules"]) == audit_rules(
        {rule["secret"] for rule in policy["rules"]}, names["policy_configmap"]
    )
    # The documented way to use it binds a group, never the webhook's ServiceAccount.
    assert "--clusterrole=pullsecret-injector-audit --group=" in text


def test_serve_flags_exist(binary):
    # Every flag the manifests may pass is one `serve` knows, including the newer ones.
    flags = help_flags(binary, "serve")
    assert SERVE_FLAGS <= flags, SERVE_FLAGS - flags
    assert {"--header-read-timeout", "--reload-interval", "--copy-deadline", "--shutdown-grace", "--policy-configmap", "--namespace"} <= flags


@pytest.mark.parametrize("name", OVERLAYS)
def test_deployment_sets_the_newer_serve_flags(rendered, name):
    args = container_args(one(rendered[name], "Deployment"))
    assert args["--header-read-timeout"] == "10s"
    assert args["--max-body-memory"] == "32Mi" and args["--idle-timeout"] == "90s"
    assert args["--tls-server-name"] == "pullsecret-injector.$(POD_NAMESPACE).svc"
    assert args["--reload-interval"] == "2s"
    assert args["--prune-grace"] == "30s"


def documented_overlay() -> dict[str, str]:
    """The files of the kustomize overlay example in docs/install.md, by name."""
    text = (REPO / "docs" / "install.md").read_text()
    section = text.split("### Your own overlay instead of editing deploy/base", 1)[1].split("\n## ", 1)[0]
    files = re.findall(r"^`overlays/prod/([\w.-]+)`[^\n]*\n\n```yaml\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    return dict(files)


def test_documented_overlay_keeps_policy_and_rbac_in_step(binary, tmp_path):
    files = documented_overlay()
    assert set(files) == {"kustomization.yaml", "policy.yaml", "secrets.yaml"}, set(files)
    overlay = tmp_path / "overlays" / "prod"
    overlay.mkdir(parents=True)
    for name, content in files.items():
        if name == "kustomization.yaml":
            # The docs place the overlay two levels below the repository root.
            content = content.replace("../../deploy", os.path.relpath(REPO / "deploy", overlay))
        (overlay / name).write_text(content)
    kubectl = shutil.which("kubectl")
    assert kubectl
    result = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    objects = load_all(result.stdout)
    validate_objects(objects)
    names = check_install(objects, NAMESPACE)
    configmap = one(objects, "ConfigMap", names["policy_configmap"])
    policy = yaml.safe_load(configmap["data"]["policy.yaml"])
    assert policy == yaml.safe_load(files["policy.yaml"]), "the overlay's policy replaced the base's"
    assert names["secret_names"] == {rule["secret"] for rule in policy["rules"]} == {"harbor-pull"}
    (container,) = names["deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(":0.1.0")
    assert run_check(binary, configmap["data"]["policy.yaml"], tmp_path).returncode == 0
