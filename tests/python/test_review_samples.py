"""`review` over the reference AdmissionReview samples (tests/fixtures/reference), checked with an independent RFC 6902
implementation (the `jsonpatch` package) applying the patch the webhook returns."""

import base64
import copy
import json
import os
import pathlib
import subprocess

import jsonpatch
import pytest
from conftest import binary_path

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY = binary_path()
ANNOTATION = "pullsecret-injector.io/injected"


SAMPLES = REPO / "tests" / "fixtures" / "reference" / "admission_review_samples"

# Covers every registry the samples use; rule order decides secret order.
POLICY = """\
sourceNamespace: registry-credentials
rules:
  - name: example
    registries: ["registry.example.com:5000"]
    secret: example-pull
  - name: ghcr
    registries: ["ghcr.io/acme/"]
    secret: ghcr-pull
  - name: quay
    registries: [quay.io/acme]
    secret: quay-pull
  - name: ecr
    registries: ["*.dkr.ecr.*.amazonaws.com"]
    secret: ecr-pull
  - name: local
    registries: ["localhost:5000"]
    secret: local-pull
  - name: hub
    registries: [docker.io]
    secret: hub-pull
"""

# CREATE samples: secrets appended (after what the Pod already had) and the annotation value.
EXPECTED_CREATE = {
    "01_pod_create_replicaset.json": (["example-pull", "hub-pull"], "example=example-pull,hub=hub-pull"),
    "02_pod_create_dryrun.json": (["ghcr-pull"], "ghcr=ghcr-pull"),
    "03_pod_create_init_sidecar.json": (
        ["quay-pull", "ecr-pull", "local-pull", "hub-pull"],
        "quay=quay-pull,ecr=ecr-pull,local=local-pull,hub=hub-pull",
    ),
}
UPDATES = ["04_pod_update_image.json", "05_pod_ephemeralcontainers_update.json"]


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(POLICY)
    return path


def review(policy_file, body: bytes, *extra: str) -> dict:
    assert BINARY.exists(), f"build the binary first: cargo build ({BINARY})"
    result = subprocess.run(
        [str(BINARY), "review", "--policy", str(policy_file), *extra, "-"],
        input=body,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def check_envelope(answer: dict, request: dict) -> dict:
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == request["request"]["uid"]
    assert response["allowed"] is True
    # patchType exactly when there is a non-empty patch
    assert ("patch" in response) == ("patchType" in response)
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        assert response["patch"]
    for warning in response.get("warnings", []):
        assert warning and len(warning) <= 256
        assert not any(ord(c) < 32 or ord(c) == 127 for c in warning)
    return response


def decode_patch(response: dict) -> list:
    raw = base64.b64decode(response["patch"], validate=True)
    assert base64.b64encode(raw).decode() == response["patch"], "standard padded base64"
    return json.loads(raw)


def test_every_sample_is_covered():
    names = sorted(p.name for p in SAMPLES.glob("*.json"))
    assert names == sorted([*EXPECTED_CREATE, *UPDATES])


@pytest.mark.parametrize("name", sorted(EXPECTED_CREATE))
def test_create_samples_get_merged_pull_secrets(policy_file, name):
    body = (SAMPLES / name).read_bytes()
    request = json.loads(body)
    response = check_envelope(review(policy_file, body), request)
    pod = request["request"]["object"]
    patched = jsonpatch.JsonPatch(decode_patch(response)).apply(copy.deepcopy(pod))

    added, annotation = EXPECTED_CREATE[name]
    before = [s["name"] for s in pod["spec"].get("imagePullSecrets", [])]
    after = [s["name"] for s in patched["spec"]["imagePullSecrets"]]
    assert after == before + added
    assert len(after) == len(set(after)), "no duplicate names"
    assert patched["metadata"]["annotations"][ANNOTATION] == annotation
    for key, value in pod["metadata"].get("annotations", {}).items():
        assert patched["metadata"]["annotations"][key] == value
    # Nothing else changed.
    assert {k: v for k, v in patched["spec"].items() if k != "imagePullSecrets"} == {
        k: v for k, v in pod["spec"].items() if k != "imagePullSecrets"
    }

    # Reinvocation: the patched Pod, reviewed again, needs no further patch.
    again = copy.deepcopy(request)
    again["request"]["object"] = patched
    second = check_envelope(review(policy_file, json.dumps(again).encode()), again)
    assert "patch" not in second


@pytest.mark.parametrize("name", UPDATES)
def test_updates_get_no_patch_but_a_warning(policy_file, name):
    body = (SAMPLES / name).read_bytes()
    request = json.loads(body)
    response = check_envelope(review(policy_file, body), request)
    assert "patch" not in response
    assert len(response.get("warnings", [])) == 1, response


def test_dry_run_gets_the_same_patch(policy_file):
    body = (SAMPLES / "02_pod_create_dryrun.json").read_bytes()
    request = json.loads(body)
    assert request["request"]["dryRun"] is True
    dry = check_envelope(review(policy_file, body), request)
    wet_request = copy.deepcopy(request)
    wet_request["request"]["dryRun"] = False
    wet = check_envelope(review(policy_file, json.dumps(wet_request).encode()), wet_request)
    assert decode_patch(dry) == decode_patch(wet)


def test_patched_output_matches_applying_the_response(policy_file):
    body = (SAMPLES / "03_pod_create_init_sidecar.json").read_bytes()
    request = json.loads(body)
    response = check_envelope(review(policy_file, body), request)
    expected = jsonpatch.JsonPatch(decode_patch(response)).apply(copy.deepcopy(request["request"]["object"]))
    assert review(policy_file, body, "--output", "patched") == expected
