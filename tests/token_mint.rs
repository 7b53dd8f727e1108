//! `secret create NAME --from-ecr | --from-gar | --from-acr`: the real binary mints with the
//! identity its environment gives it, against the local cloud fakes, and prints a Secret the
//! kubelet can use. One test pulls through a real docker-registry with the minted credential.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use support::cli::{self, assert_exit};
use support::cloud::{ACR_USER, CLOUD_VARIABLES, Failure, FakeCloud};
use support::registry::{Auth, Registry, push_image, require_tool};

const LIFETIME: Duration = Duration::from_secs(30);

fn mint(env: &[(String, String)], args: &[&str]) -> Output {
    let mut cmd = cli::command();
    for name in CLOUD_VARIABLES {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["secret", "create", "pull", "-o", "json"])
        .args(args);
    cli::run_command(&mut cmd, b"")
}

/// The printed Secret's docker config and annotations.
fn printed(out: &Output) -> (Value, Value) {
    let secret: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a Secret ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    let data = secret["data"][".dockerconfigjson"].as_str().expect("data");
    let config: Value = serde_json::from_slice(&STANDARD.decode(data).unwrap()).unwrap();
    (config, secret["metadata"]["annotations"].clone())
}

fn expires_in(annotations: &Value) -> Duration {
    let at: k8s_openapi::jiff::Timestamp = annotations["pullsecret-injector.io/expires-at"]
        .as_str()
        .expect("expires-at annotation")
        .parse()
        .expect("RFC 3339");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Duration::from_secs((at.as_second() - now).max(0) as u64)
}

#[test]
fn ecr_credential_is_minted_through_web_identity() {
    let cloud = FakeCloud::start(LIFETIME, "ecr-password-1");
    let out = mint(&cloud.aws_env(), &["--from-ecr", "eu-west-1"]);
    assert_exit(&out, 0);
    let (config, annotations) = printed(&out);
    let entry = &config["auths"]["123456789012.dkr.ecr.eu-west-1.amazonaws.com"];
    assert_eq!(entry["username"], "AWS");
    assert_eq!(entry["password"], "ecr-password-1");
    assert_eq!(entry["auth"], STANDARD.encode("AWS:ecr-password-1"));
    assert_eq!(annotations["pullsecret-injector.io/token-source"], "ecr");
    let left = expires_in(&annotations);
    assert!(
        left > Duration::from_secs(20) && left <= LIFETIME,
        "{left:?}"
    );
    let calls = cloud.calls();
    assert_eq!((calls.sts, calls.ecr), (1, 1), "{calls:?}");
    // The printed Secret is for GitOps: serve would not take it over.
    let secret: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(secret["metadata"].get("labels").is_none(), "{secret}");
    // Nothing secret on stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("ecr-password-1"), "{stderr}");
}

#[test]
fn ecr_registry_ids_give_one_entry_per_account() {
    let cloud = FakeCloud::start(LIFETIME, "pw");
    let out = mint(
        &cloud.aws_env(),
        &[
            "--from-ecr",
            "eu-west-1",
            "--registry-id",
            "111111111111",
            "--registry-id",
            "222222222222",
        ],
    );
    assert_exit(&out, 0);
    let (config, _) = printed(&out);
    let mut keys: Vec<&str> = config["auths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec![
            "111111111111.dkr.ecr.eu-west-1.amazonaws.com",
            "222222222222.dkr.ecr.eu-west-1.amazonaws.com"
        ]
    );
}

#[test]
fn a_refused_mint_is_a_clear_error_without_secrets() {
    let cloud = FakeCloud::start(LIFETIME, "never-printed");
    cloud.set_failure(Failure::Throttle);
    let out = mint(&cloud.aws_env(), &["--from-ecr", "eu-west-1"]);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot mint a ecr credential"), "{stderr}");
    assert!(stderr.contains("Throttl"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        !stderr.contains("never-printed") && !stderr.contains("fake-secret"),
        "{stderr}"
    );
}

#[test]
fn without_an_identity_the_error_says_so() {
    let cloud = FakeCloud::start(LIFETIME, "pw");
    // Web identity pointing at a token the fake STS does not accept.
    let mut env = cloud.aws_env();
    let bad = cloud.dir.path().join("other-token");
    std::fs::write(&bad, "not-the-token").unwrap();
    for (k, v) in env.iter_mut() {
        if k == "AWS_WEB_IDENTITY_TOKEN_FILE" {
            *v = bad.display().to_string();
        }
    }
    let out = mint(&env, &["--from-ecr", "eu-west-1"]);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("InvalidIdentityToken"), "{stderr}");
    assert_eq!(cloud.calls().ecr, 0);
}

#[test]
fn bad_region_is_refused_before_any_call() {
    let cloud = FakeCloud::start(LIFETIME, "pw");
    let out = mint(&cloud.aws_env(), &["--from-ecr", "Europe"]);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an AWS region"));
    assert_eq!(cloud.calls(), Default::default());
}

#[test]
fn google_access_token_from_a_service_account_key() {
    let cloud = FakeCloud::start(LIFETIME, "gar-1");
    let out = mint(
        &cloud.google_key_env(),
        &["--from-gar", "europe-docker.pkg.dev,gcr.io"],
    );
    assert_exit(&out, 0);
    let (config, annotations) = printed(&out);
    for registry in ["europe-docker.pkg.dev", "gcr.io"] {
        let entry = &config["auths"][registry];
        assert_eq!(entry["username"], "oauth2accesstoken", "{config}");
        assert_eq!(entry["password"], "ya29.gar-1");
    }
    assert_eq!(annotations["pullsecret-injector.io/token-source"], "google");
    assert!(expires_in(&annotations) > Duration::from_secs(20));
    assert_eq!(cloud.calls().google_token, 1, "{}", cloud.last_refusal());
}

#[test]
fn google_access_token_from_the_metadata_server() {
    let cloud = FakeCloud::start(LIFETIME, "gke-1");
    let out = mint(&cloud.google_metadata_env(), &["--from-gar", "gcr.io"]);
    assert_exit(&out, 0);
    let (config, _) = printed(&out);
    assert_eq!(config["auths"]["gcr.io"]["password"], "ya29.gke-1");
    let calls = cloud.calls();
    assert_eq!((calls.metadata, calls.refused), (1, 0), "{calls:?}");
}

#[test]
fn acr_refresh_token_through_workload_identity() {
    let cloud = FakeCloud::start(Duration::from_secs(10_800), "unused");
    let registry = cloud.https_host();
    let out = mint(&cloud.azure_env(), &["--from-acr", &registry]);
    assert_exit(&out, 0);
    let (config, annotations) = printed(&out);
    let entry = &config["auths"][registry.as_str()];
    assert_eq!(entry["username"], ACR_USER);
    assert_eq!(entry["password"].as_str().unwrap().split('.').count(), 3);
    let left = expires_in(&annotations);
    assert!(left > Duration::from_secs(10_700), "{left:?}");
    let calls = cloud.calls();
    assert_eq!((calls.entra, calls.acr_exchange), (1, 1), "{calls:?}");
}

/// Managed identity through the Azure SDK's `ManagedIdentityCredential`, at App Service's
/// endpoint (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`: the SDK fixes IMDS at 169.254.169.254, so
/// this is the managed identity source a test can point at), then the same ACR exchange.
#[test]
fn acr_refresh_token_through_managed_identity() {
    let cloud = FakeCloud::start(Duration::from_secs(10_800), "unused");
    let registry = cloud.https_host();
    let out = mint(&cloud.azure_managed_env(), &["--from-acr", &registry]);
    assert_exit(&out, 0);
    let (config, annotations) = printed(&out);
    assert_eq!(config["auths"][registry.as_str()]["username"], ACR_USER);
    assert!(expires_in(&annotations) > Duration::from_secs(10_700));
    let calls = cloud.calls();
    assert_eq!(
        (calls.managed_identity, calls.entra, calls.acr_exchange),
        (1, 0, 1),
        "{calls:?}"
    );
    // A user-assigned identity is asked for by AZURE_CLIENT_ID.
    let mut env = cloud.azure_managed_env();
    env.push(("AZURE_CLIENT_ID".into(), "not-assigned-here".into()));
    let out = mint(&env, &["--from-acr", &registry]);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Azure managed identity refused: HTTP 400"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(support::cloud::AZURE_IDENTITY_HEADER),
        "{stderr}"
    );
}

/// The Entra call goes through the Azure SDK: a refusal is reported with the status and
/// Entra's numeric error code, at once (the SDK's own retries are off: the refresher's backoff
/// is the one retry policy), and without the federated token or any issued token.
#[test]
fn a_refused_azure_mint_is_a_clear_error_without_secrets() {
    let cloud = FakeCloud::start(LIFETIME, "never-printed");
    cloud.set_failure(Failure::Throttle);
    let registry = cloud.https_host();
    let out = mint(&cloud.azure_env(), &["--from-acr", &registry]);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot mint a azure credential"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Entra ID workload identity refused: HTTP 503 (90033)"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert!(
        !stderr.contains(support::cloud::AZURE_ASSERTION) && !stderr.contains("never-printed"),
        "{stderr}"
    );
    let calls = cloud.calls();
    assert_eq!((calls.refused, calls.entra), (1, 0), "{calls:?}");
}

/// Workload identity as the Azure SDK reads it: a tenant the fake Entra does not know is
/// refused with Entra's own code, so the SDK really sent `AZURE_TENANT_ID` to
/// `AZURE_AUTHORITY_HOST`.
#[test]
fn azure_workload_identity_settings_come_from_the_environment() {
    let cloud = FakeCloud::start(LIFETIME, "unused");
    let registry = cloud.https_host();
    let mut env = cloud.azure_env();
    for (name, value) in &mut env {
        if name == "AZURE_TENANT_ID" {
            *value = "00000000-0000-0000-0000-000000000009".into();
        }
    }
    let out = mint(&env, &["--from-acr", &registry]);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 400 (90002)"), "{stderr}");
    env.retain(|(name, _)| name != "AZURE_CLIENT_ID");
    let out = mint(&env, &["--from-acr", &registry]);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AZURE_FEDERATED_TOKEN_FILE is set but AZURE_CLIENT_ID is not"),
        "{stderr}"
    );
}

/// The Secret is proven usable: skopeo reads an image from a real docker-registry whose
/// htpasswd knows the password the fake ECR issued, with the minted docker config as its
/// auth file.
#[test]
fn a_minted_ecr_credential_pulls_from_a_real_registry() {
    let password = "minted-registry-password";
    let registry = Registry::start(Auth::Htpasswd(&[("AWS", password)]), None);
    let image = format!("{}/team/app:1.0", registry.host());
    push_image(&image, ("AWS", password));

    let cloud = FakeCloud::start(LIFETIME, password);
    cloud.set_ecr_registry(&registry.host());
    let out = mint(&cloud.aws_env(), &["--from-ecr", "eu-west-1"]);
    assert_exit(&out, 0);
    let (config, _) = printed(&out);
    assert!(config["auths"].get(registry.host()).is_some(), "{config}");

    let dir = tempfile::tempdir().unwrap();
    let authfile = dir.path().join("auth.json");
    std::fs::write(&authfile, config.to_string()).unwrap();
    let inspect = |authfile: &std::path::Path| {
        Command::new(require_tool("skopeo"))
            .args(["inspect", "--tls-verify=false", "--authfile"])
            .arg(authfile)
            .arg(format!("docker://{image}"))
            .output()
            .unwrap()
    };
    let ok = inspect(&authfile);
    assert!(
        ok.status.success(),
        "skopeo inspect with the minted credential failed: {}\n{}",
        String::from_utf8_lossy(&ok.stderr),
        registry.log()
    );
    // The same pull without it is refused: the credential is what opened the door.
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"auths":{}}"#).unwrap();
    assert!(!inspect(&empty).status.success());
}

/// Workload identity federation (`external_account`): the subject token from a file or from a
/// URL source, exchanged at Google STS, and with `service_account_impersonation_url` traded for
/// the service account's token. STS and IAM Credentials answer different lifetimes, so
/// expires-at shows which answer the expiry came from: `expires_in`, or `expireTime`.
#[test]
fn google_access_token_through_workload_identity_federation() {
    use support::cloud::SubjectSource;
    let sts_lifetime = Duration::from_secs(3000);
    for (source, impersonate) in [
        (SubjectSource::File, false),
        (SubjectSource::Url, false),
        (SubjectSource::File, true),
        (SubjectSource::Url, true),
    ] {
        let case = format!("{source:?} subject token, impersonation {impersonate}");
        let cloud = FakeCloud::start(LIFETIME, "wif-1");
        cloud.set_sts_lifetime(sts_lifetime);
        let out = mint(
            &cloud.google_external_env(source, impersonate),
            &["--from-gar", "europe-docker.pkg.dev"],
        );
        assert_exit(&out, 0);
        let (config, annotations) = printed(&out);
        let entry = &config["auths"]["europe-docker.pkg.dev"];
        assert_eq!(entry["username"], "oauth2accesstoken", "{case}");
        let (token, lifetime) = if impersonate {
            ("ya29.c.wif-1", LIFETIME)
        } else {
            ("ya29.d.wif-1", sts_lifetime)
        };
        assert_eq!(entry["password"], token, "{case}");
        let left = expires_in(&annotations);
        assert!(
            left + Duration::from_secs(10) > lifetime && left <= lifetime,
            "{case}: expires in {left:?}, the answer said {lifetime:?}"
        );
        let calls = cloud.calls();
        assert_eq!(
            (
                calls.google_sts,
                calls.google_iam,
                calls.subject_token,
                calls.refused
            ),
            (
                1,
                usize::from(impersonate),
                usize::from(source == SubjectSource::Url),
                0
            ),
            "{case}: {calls:?} {}",
            cloud.last_refusal()
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains(support::cloud::GOOGLE_SUBJECT_TOKEN),
            "{stderr}"
        );
    }
}

/// A refused exchange names the step and the status, and prints neither the subject token nor
/// any issued token.
#[test]
fn a_refused_google_federation_is_a_clear_error_without_secrets() {
    use support::cloud::SubjectSource;
    let cloud = FakeCloud::start(LIFETIME, "never-printed");
    // STS itself refuses a subject token it does not know.
    let env = cloud.google_external_env(SubjectSource::File, true);
    std::fs::write(
        cloud.dir.path().join("google-subject-token"),
        "eyJ.not-the-subject.sig",
    )
    .unwrap();
    let out = mint(&env, &["--from-gar", "gcr.io"]);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Google STS refused: HTTP 400 (invalid_grant)"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-subject"), "{stderr}");
    assert_eq!(cloud.calls().google_iam, 0);

    // IAM Credentials refuses a service account the workload may not impersonate: its own
    // status, and not the federated token that was sent to it.
    std::fs::write(
        cloud.dir.path().join("google-subject-token"),
        support::cloud::GOOGLE_SUBJECT_TOKEN,
    )
    .unwrap();
    let file = &env
        .iter()
        .find(|(k, _)| k == "GOOGLE_APPLICATION_CREDENTIALS")
        .unwrap()
        .1;
    let text = std::fs::read_to_string(file).unwrap();
    std::fs::write(
        file,
        text.replace(
            support::cloud::GOOGLE_SA_EMAIL,
            "other@acme-prod.iam.gserviceaccount.com",
        ),
    )
    .unwrap();
    let out = mint(&env, &["--from-gar", "gcr.io"]);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "Google IAM Credentials generateAccessToken refused: HTTP 403 (PERMISSION_DENIED)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("ya29"), "{stderr}");
    assert_eq!(cloud.calls().google_sts, 1);

    // Throttled: the status, nothing issued on stdout.
    cloud.set_failure(Failure::Throttle);
    let out = mint(&env, &["--from-gar", "gcr.io"]);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Google STS refused: HTTP 429"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(!stderr.contains("never-printed"), "{stderr}");
}

/// EKS Pod Identity: the SDK's container provider takes temporary keys from the agent with the
/// projected token, and ECR accepts requests signed with them (no STS call at all). A token
/// the agent refuses is a clear error, and the token is not printed.
#[test]
fn ecr_credential_is_minted_through_eks_pod_identity() {
    let cloud = FakeCloud::start(LIFETIME, "pod-identity-pw");
    let out = mint(&cloud.aws_pod_identity_env(), &["--from-ecr", "eu-west-1"]);
    assert_exit(&out, 0);
    let (config, annotations) = printed(&out);
    let entry = &config["auths"]["123456789012.dkr.ecr.eu-west-1.amazonaws.com"];
    assert_eq!(entry["password"], "pod-identity-pw");
    assert!(expires_in(&annotations) > Duration::from_secs(20));
    let calls = cloud.calls();
    assert_eq!(
        (calls.pod_identity, calls.sts, calls.ecr),
        (1, 0, 1),
        "{calls:?}"
    );

    std::fs::write(cloud.pod_identity_token_file(), "eyJ.other-token.sig").unwrap();
    let out = mint(&cloud.aws_pod_identity_env(), &["--from-ecr", "eu-west-1"]);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot mint a ecr credential"), "{stderr}");
    assert!(!stderr.contains("other-token"), "{stderr}");
    assert_eq!(cloud.calls().ecr, 1);
}

/// Every cloud client verifies the endpoint's certificate, and the test CA is trusted only
/// through `SSL_CERT_FILE`: without it each mint fails on the TLS handshake, before anything
/// is issued.
#[test]
fn cloud_endpoints_are_trusted_only_through_ssl_cert_file() {
    let cloud = FakeCloud::start(LIFETIME, "never-issued");
    let acr = cloud.https_host();
    for (env, args) in [
        (cloud.aws_env(), vec!["--from-ecr", "eu-west-1"]),
        (cloud.google_key_env(), vec!["--from-gar", "gcr.io"]),
        (cloud.azure_env(), vec!["--from-acr", acr.as_str()]),
    ] {
        let trusted = mint(&env, &args);
        assert_exit(&trusted, 0);
        let env: Vec<_> = env
            .into_iter()
            .filter(|(k, _)| k != "SSL_CERT_FILE")
            .collect();
        let before = cloud.calls();
        let out = mint(&env, &args);
        assert_exit(&out, 2);
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot mint a"), "{args:?}: {stderr}");
        assert_eq!(
            cloud.calls(),
            before,
            "{args:?}: nothing answered without trust"
        );
    }
}

/// The EC2 instance profile, last in the SDK's chain: IMDSv2 (session token first) at
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, and ECR accepts requests signed with the role's keys.
#[test]
fn ecr_credential_is_minted_with_the_ec2_instance_profile() {
    let cloud = FakeCloud::start(LIFETIME, "instance-pw");
    let out = mint(&cloud.aws_imds_env(), &["--from-ecr", "eu-west-1"]);
    assert_exit(&out, 0);
    let (config, _) = printed(&out);
    assert_eq!(
        config["auths"]["123456789012.dkr.ecr.eu-west-1.amazonaws.com"]["password"],
        "instance-pw"
    );
    let calls = cloud.calls();
    assert_eq!(
        (calls.ec2_imds, calls.sts, calls.ecr, calls.refused),
        (1, 0, 1, 0),
        "{calls:?} {}",
        cloud.last_refusal()
    );
}
