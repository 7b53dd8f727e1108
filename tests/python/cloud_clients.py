"""Real cloud clients from PyPI against the token-source fakes (tests/support/cloud.rs), so the
fakes answer the way boto3, google-auth and azure-identity expect the real services to, not the
way our own code happens to call them.

Run by tests/token_fakes.rs, which starts the fakes and passes their addresses in the
environment (FAKE_HTTPS, FAKE_METADATA_HOST, FAKE_PASSWORD, file paths, SSL_CERT_FILE). Not a
pytest module: it needs the fakes running. Exits non-zero with the failing check on stderr.
"""

from __future__ import annotations

import base64
import datetime
import os
import sys

import requests

ENV = os.environ
HTTPS = ENV["FAKE_HTTPS"]
CA = ENV["SSL_CERT_FILE"]
PASSWORD = ENV["FAKE_PASSWORD"]
ROLE_ARN = ENV["FAKE_ROLE_ARN"]


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def aws() -> None:
    import boto3
    import botocore
    from botocore.config import Config

    with open(ENV["FAKE_WEB_IDENTITY_TOKEN_FILE"]) as f:
        token = f.read().strip()
    sts = boto3.client(
        "sts",
        region_name="eu-west-1",
        endpoint_url=HTTPS,
        verify=CA,
        config=Config(signature_version=botocore.UNSIGNED),
    )
    out = sts.assume_role_with_web_identity(
        RoleArn=ROLE_ARN, RoleSessionName="boto3-check", WebIdentityToken=token
    )
    creds = out["Credentials"]
    check(creds["AccessKeyId"].startswith("ASIA"), "STS issues temporary keys")
    check(isinstance(creds["Expiration"], datetime.datetime), "Expiration parses as a time")
    check(out["AssumedRoleUser"]["Arn"].endswith("/boto3-check"), "assumed role ARN")

    try:
        sts.assume_role_with_web_identity(
            RoleArn=ROLE_ARN, RoleSessionName="boto3-check", WebIdentityToken="wrong"
        )
        raise AssertionError("a wrong web identity token was accepted")
    except botocore.exceptions.ClientError as e:
        check(e.response["Error"]["Code"] == "InvalidIdentityToken", f"STS error code: {e}")

    def ecr_client(secret: str, session: str | None):
        return boto3.client(
            "ecr",
            region_name="eu-west-1",
            endpoint_url=HTTPS,
            verify=CA,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=secret,
            aws_session_token=session,
        )

    ecr = ecr_client(creds["SecretAccessKey"], creds["SessionToken"])
    data = ecr.get_authorization_token()["authorizationData"][0]
    check(
        base64.b64decode(data["authorizationToken"]).decode() == f"AWS:{PASSWORD}",
        "authorizationToken is base64 of AWS:<password>",
    )
    check(isinstance(data["expiresAt"], datetime.datetime), "expiresAt parses as a time")
    check(data["proxyEndpoint"].startswith("https://"), "proxyEndpoint is a URL")

    for secret, session, what in [
        ("wrong-secret", creds["SessionToken"], "a bad signature"),
        (creds["SecretAccessKey"], None, "a missing session token"),
    ]:
        try:
            ecr_client(secret, session).get_authorization_token()
            raise AssertionError(f"ECR accepted {what}")
        except botocore.exceptions.ClientError as e:
            check(
                e.response["Error"]["Code"] == "UnrecognizedClientException",
                f"ECR error code for {what}: {e}",
            )

    # The SDK's own web identity provider, with the service endpoints from the environment.
    session = boto3.session.Session(region_name="eu-west-1")
    ecr = session.client("ecr", verify=CA)
    data = ecr.get_authorization_token()["authorizationData"][0]
    check(
        base64.b64decode(data["authorizationToken"]).decode() == f"AWS:{PASSWORD}",
        "boto3's default chain (web identity, AWS_ENDPOINT_URL_STS/ECR) mints too",
    )

    # EKS Pod Identity: botocore's container provider, with the agent's token file.
    saved = {k: os.environ.pop(k) for k in ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")}
    os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = ENV["FAKE_POD_IDENTITY_URI"]
    os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = ENV["FAKE_POD_IDENTITY_TOKEN_FILE"]
    try:
        session = boto3.session.Session(region_name="eu-west-1")
        creds = session.get_credentials().get_frozen_credentials()
        check(creds.access_key.startswith("ASIA") and creds.token, "Pod Identity keys")
        data = session.client("ecr", verify=CA).get_authorization_token()["authorizationData"][0]
        check(
            base64.b64decode(data["authorizationToken"]).decode() == f"AWS:{PASSWORD}",
            "boto3 through EKS Pod Identity mints too",
        )
    finally:
        os.environ.pop("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        os.environ.pop("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        os.environ.update(saved)

    # The EC2 instance profile through IMDSv2, at AWS_EC2_METADATA_SERVICE_ENDPOINT.
    saved = {
        k: os.environ.pop(k)
        for k in ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_EC2_METADATA_DISABLED")
    }
    os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = ENV["FAKE_IMDS_ENDPOINT"]
    try:
        session = boto3.session.Session(region_name="eu-west-1")
        creds = session.get_credentials()
        check(creds is not None and creds.method == "iam-role", f"IMDS role keys: {creds}")
        data = session.client("ecr", verify=CA).get_authorization_token()["authorizationData"][0]
        check(
            base64.b64decode(data["authorizationToken"]).decode() == f"AWS:{PASSWORD}",
            "boto3 with the EC2 instance profile mints too",
        )
        plain = requests.get(f"{ENV['FAKE_IMDS_ENDPOINT']}latest/meta-data/iam/security-credentials/")
        check(plain.status_code == 401, "IMDSv2 refuses reads without a session token")
    finally:
        os.environ.pop("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        os.environ.update(saved)


def google() -> None:
    import google.auth.transport.requests
    from google.auth import compute_engine
    from google.oauth2 import service_account

    request = google.auth.transport.requests.Request()
    creds = service_account.Credentials.from_service_account_file(
        ENV["FAKE_GOOGLE_KEY_FILE"], scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    creds.refresh(request)
    check(creds.token == f"ya29.{PASSWORD}", "service-account key: access token")
    check(creds.expiry is not None, "service-account key: expiry")

    # GCE_METADATA_HOST / GCE_METADATA_IP point at the fake (read when google.auth loads).
    gce = compute_engine.Credentials()
    gce.refresh(request)
    check(gce.token == f"ya29.{PASSWORD}", "metadata server: access token")
    check(gce.expiry is not None, "metadata server: expiry")
    plain = requests.get(
        f"http://{ENV['FAKE_METADATA_HOST']}/computeMetadata/v1/instance/service-accounts/default/token"
    )
    check(plain.status_code == 403, "the metadata server needs Metadata-Flavor: Google")

    google_external_account(request)


def google_external_account(request) -> None:
    """Workload identity federation: google-auth 2.x takes `token_url` and
    `service_account_impersonation_url` from the file as they are (no check that they are
    googleapis.com hosts), so the files point straight at the fakes."""
    from google.auth import exceptions, identity_pool

    scopes = ["https://www.googleapis.com/auth/cloud-platform"]
    # File-sourced subject token, the federated token used as it is.
    fed = identity_pool.Credentials.from_file(ENV["FAKE_GOOGLE_EXTERNAL_FILE"], scopes=scopes)
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    fed.refresh(request)
    check(fed.token == f"ya29.d.{PASSWORD}", f"STS federated token: {fed.token}")
    left = (fed.expiry - before).total_seconds()
    check(
        abs(left - int(ENV["FAKE_STS_LIFETIME"])) < 30,
        f"STS expiry from expires_in: {left}",
    )

    # URL-sourced subject token (headers, JSON format), then service-account impersonation.
    sa = identity_pool.Credentials.from_file(ENV["FAKE_GOOGLE_EXTERNAL_URL_SA_FILE"], scopes=scopes)
    sa.refresh(request)
    check(sa.token == f"ya29.c.{PASSWORD}", f"impersonated token: {sa.token}")
    check(sa.service_account_email == ENV["FAKE_GOOGLE_SA_EMAIL"], "impersonated account")
    left = (sa.expiry - before).total_seconds()
    check(
        abs(left - int(ENV["FAKE_LIFETIME"])) < 30,
        f"IAM expiry from expireTime: {left}",
    )

    # A subject token STS does not know is refused with OAuth's invalid_grant.
    import json
    import tempfile

    with open(ENV["FAKE_GOOGLE_EXTERNAL_FILE"]) as f:
        info = json.load(f)
    with tempfile.NamedTemporaryFile("w", suffix=".token", delete=False) as bad:
        bad.write("not-the-subject-token")
    info["credential_source"] = {"file": bad.name}
    wrong = identity_pool.Credentials.from_info(info, scopes=scopes)
    try:
        wrong.refresh(request)
        raise AssertionError("STS accepted a wrong subject token")
    except exceptions.OAuthError as e:
        check("invalid_grant" in str(e), f"STS error: {e}")
    finally:
        os.unlink(bad.name)


def azure() -> None:
    from azure.identity import WorkloadIdentityCredential

    host = HTTPS.removeprefix("https://")
    cred = WorkloadIdentityCredential(
        tenant_id=ENV["FAKE_AZURE_TENANT_ID"],
        client_id=ENV["FAKE_AZURE_CLIENT_ID"],
        token_file_path=ENV["FAKE_AZURE_TOKEN_FILE"],
        authority=host,
        disable_instance_discovery=True,
    )
    token = cred.get_token("https://containerregistry.azure.net/.default")
    check(token.token.count(".") == 2, "Entra access token is a JWT")
    check(token.expires_on > datetime.datetime.now().timestamp(), "Entra expiry")

    answer = requests.post(
        f"{HTTPS}/oauth2/exchange",
        data={
            "grant_type": "access_token",
            "service": host,
            "tenant": ENV["FAKE_AZURE_TENANT_ID"],
            "access_token": token.token,
        },
        verify=CA,
    )
    check(answer.status_code == 200, f"ACR exchange: {answer.status_code}")
    check(answer.json()["refresh_token"].count(".") == 2, "ACR refresh token is a JWT")

    # Managed identity at App Service's endpoint (the SDK reads these two when it is built).
    from azure.identity import ManagedIdentityCredential

    os.environ["IDENTITY_ENDPOINT"] = ENV["FAKE_IDENTITY_ENDPOINT"]
    os.environ["IDENTITY_HEADER"] = ENV["FAKE_IDENTITY_HEADER"]
    managed = ManagedIdentityCredential().get_token("https://containerregistry.azure.net/.default")
    check(managed.token.count(".") == 2, "managed identity access token is a JWT")
    check(
        managed.expires_on > datetime.datetime.now().timestamp(),
        "managed identity expiry (expires_on as a string of Unix seconds)",
    )


def main() -> int:
    failed = 0
    for name, run in [("aws", aws), ("google", google), ("azure", azure)]:
        try:
            run()
            print(f"{name}: ok")
        except Exception as e:  # noqa: BLE001 - report every client's failure
            failed += 1
            print(f"{name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
