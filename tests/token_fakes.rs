//! The cloud fakes against real clients from PyPI (boto3, google-auth, azure-identity), so
//! they answer as those clients expect the real services to: `tests/python/cloud_clients.py`
//! runs in the project's virtual environment (scripts/setup-python.sh) against fakes started
//! here.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::cloud::{
    AZURE_CLIENT_ID, AZURE_IDENTITY_HEADER, AZURE_TENANT_ID, CLOUD_VARIABLES, FakeCloud,
    GOOGLE_SA_EMAIL, ROLE_ARN, SubjectSource,
};

#[test]
fn real_cloud_clients_accept_the_fakes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run scripts/setup-python.sh",
        python.display()
    );
    let cloud = FakeCloud::start(Duration::from_secs(900), "client-check");
    // STS and IAM Credentials answer different lifetimes, so the client's expiry shows which
    // answer it read.
    cloud.set_sts_lifetime(Duration::from_secs(2000));
    let mut cmd = Command::new(&python);
    for name in CLOUD_VARIABLES {
        cmd.env_remove(name);
    }
    let out = cmd
        .arg(root.join("tests/python/cloud_clients.py"))
        .envs(cloud.aws_env())
        .env("REQUESTS_CA_BUNDLE", cloud.ca_file())
        .env("AWS_CA_BUNDLE", cloud.ca_file())
        // google-auth reads these when it is imported.
        .env("GCE_METADATA_HOST", cloud.metadata.to_string())
        .env("GCE_METADATA_IP", cloud.metadata.to_string())
        .env("FAKE_HTTPS", cloud.https_url())
        .env("FAKE_METADATA_HOST", cloud.metadata.to_string())
        .env("FAKE_PASSWORD", "client-check")
        .env("FAKE_ROLE_ARN", ROLE_ARN)
        .env(
            "FAKE_WEB_IDENTITY_TOKEN_FILE",
            cloud.web_identity_token_file(),
        )
        .env("FAKE_GOOGLE_KEY_FILE", cloud.google_key_file())
        .env(
            "FAKE_POD_IDENTITY_URI",
            format!("http://{}/v1/credentials", cloud.metadata),
        )
        .env(
            "FAKE_POD_IDENTITY_TOKEN_FILE",
            cloud.pod_identity_token_file(),
        )
        .env("FAKE_IMDS_ENDPOINT", format!("http://{}/", cloud.metadata))
        .env(
            "FAKE_GOOGLE_EXTERNAL_FILE",
            cloud.google_external_account_file(SubjectSource::File, false),
        )
        .env(
            "FAKE_GOOGLE_EXTERNAL_URL_SA_FILE",
            cloud.google_external_account_file(SubjectSource::Url, true),
        )
        .env("FAKE_GOOGLE_SA_EMAIL", GOOGLE_SA_EMAIL)
        .env("FAKE_STS_LIFETIME", "2000")
        .env("FAKE_LIFETIME", "900")
        .env("FAKE_AZURE_TENANT_ID", AZURE_TENANT_ID)
        .env("FAKE_AZURE_CLIENT_ID", AZURE_CLIENT_ID)
        .env("FAKE_AZURE_TOKEN_FILE", cloud.azure_token_file())
        .env(
            "FAKE_IDENTITY_ENDPOINT",
            format!("http://{}/msi/token", cloud.metadata),
        )
        .env("FAKE_IDENTITY_HEADER", AZURE_IDENTITY_HEADER)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "real clients rejected the fakes:\n{stdout}\n{stderr}\nlast refusal: {}",
        cloud.last_refusal()
    );
    for client in ["aws: ok", "google: ok", "azure: ok"] {
        assert!(stdout.contains(client), "{stdout}\n{stderr}");
    }
    let calls = cloud.calls();
    assert!(
        calls.sts >= 2 && calls.ecr >= 3 && calls.pod_identity >= 1 && calls.ec2_imds >= 1,
        "{calls:?}"
    );
    assert!(calls.google_token >= 1 && calls.metadata >= 1, "{calls:?}");
    assert!(
        calls.google_sts >= 2 && calls.google_iam >= 1 && calls.subject_token >= 1,
        "{calls:?}"
    );
    assert!(calls.entra >= 1 && calls.acr_exchange >= 1, "{calls:?}");
    assert!(calls.managed_identity >= 1, "{calls:?}");
}
