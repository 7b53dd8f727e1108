//! Token sources end to end: the real `serve` binary against the fake API server and the local
//! cloud fakes, with 30-second tokens. Minted, refreshed in place before they expire, followed
//! by their copies, kept when minting fails, and never written over a user's Secret.

mod cluster_support;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use cluster_support::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use support::cloud::{CLOUD_VARIABLES, Failure, FakeCloud};
use support::fake_apiserver::{FakeApiServer, Match};

const LIFETIME: Duration = Duration::from_secs(30);
const TOKEN_SECRET: &str = "ecr-pull";
const ECR_HOST: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const ECR_IMAGE: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:1.0";
const EXPIRES_AT: &str = "pullsecret-injector.io/expires-at";
/// A refresh is due after half of the 30 s lifetime (less up to 3 s jitter); this bounds the
/// wait for one, with room for a busy machine.
const REFRESH_DEADLINE: Duration = Duration::from_secs(40);

fn ecr_policy() -> String {
    format!(
        "sourceNamespace: {SOURCE_NS}\n\
tokenSources:\n  - secret: {TOKEN_SECRET}\n    ecr:\n      region: eu-west-1\n\
rules:\n  - name: ecr\n    registries: [\"*.dkr.ecr.*.amazonaws.com\"]\n    secret: {TOKEN_SECRET}\n"
    )
}

async fn cluster_with(policy: &str) -> FakeApiServer {
    let api = FakeApiServer::start().await;
    api.put_namespace(WEBHOOK_NS, &[]);
    api.put_namespace(SOURCE_NS, &[]);
    api.put_namespace("team-a", &[]);
    api.put_configmap(&policy_configmap(policy));
    api
}

async fn webhook(api: &FakeApiServer, env: Vec<(String, String)>) -> Webhook {
    // A child inherits the test's environment: no real cloud identity may leak in.
    let hook = Webhook::spawn_with_env(
        api.kubeconfig_path(),
        &["--policy-configmap", POLICY_CM],
        env,
        CLOUD_VARIABLES,
    )
    .await;
    // Polled here rather than with wait_ready, to show why when it never gets there.
    let until = std::time::Instant::now() + DEADLINE;
    while std::time::Instant::now() < until {
        if hook.readyz().await.0 == 200 {
            return hook;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "serve not ready: {:?}\n{}",
        hook.readyz().await,
        hook.logs().join("\n")
    );
}

/// `(user, password)` for `server` in a Secret's docker config.
fn credential(secret: &Secret, server: &str) -> Option<(String, String)> {
    let data = secret.data.as_ref()?.get(".dockerconfigjson")?;
    let config: Value = serde_json::from_slice(&data.0).ok()?;
    let entry = config["auths"].get(server)?;
    Some((
        entry["username"].as_str()?.to_string(),
        entry["password"].as_str()?.to_string(),
    ))
}

fn expires_at(secret: &Secret) -> SystemTime {
    let text = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPIRES_AT))
        .expect("expires-at annotation");
    let t: k8s_openapi::jiff::Timestamp = text.parse().expect("RFC 3339");
    SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_second() as u64)
}

async fn token_secret_with_password(
    api: &FakeApiServer,
    password: &str,
    deadline: Duration,
) -> Secret {
    let what = format!("{SOURCE_NS}/{TOKEN_SECRET} minted with {password}");
    eventually(&what, deadline, || async {
        let secret = api.get_secret(SOURCE_NS, TOKEN_SECRET)?;
        (credential(&secret, ECR_HOST) == Some(("AWS".to_string(), password.to_string())))
            .then_some(secret)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_token_is_minted_refreshed_in_place_and_copies_follow() {
    let cloud = FakeCloud::start(LIFETIME, "pw-1");
    let api = cluster_with(&ecr_policy()).await;
    let hook = webhook(&api, cloud.aws_env()).await;

    let first = token_secret_with_password(&api, "pw-1", DEADLINE).await;
    assert_eq!(
        first.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert!(is_managed_copy_label(&first), "{:?}", first.metadata.labels);
    let annotations = first.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("pullsecret-injector.io/token-source")
            .map(String::as_str),
        Some("ecr")
    );
    let first_expiry = expires_at(&first);
    assert!(first_expiry > SystemTime::now());

    // A Pod gets it, and its namespace a copy.
    let (response, _) = hook.admit("team-a", ECR_IMAGE, false).await;
    assert_eq!(injected_names(&response), vec![TOKEN_SECRET.to_string()]);
    let copy = api
        .get_secret("team-a", TOKEN_SECRET)
        .expect("copy made at admission");
    assert_eq!(copy.data, first.data);

    // The next mint carries another password: the refresh is visible, in place, before expiry.
    cloud.set_password("pw-2");
    let second = token_secret_with_password(&api, "pw-2", REFRESH_DEADLINE).await;
    assert_eq!(
        second.metadata.uid, first.metadata.uid,
        "updated in place, same UID"
    );
    assert!(expires_at(&second) > first_expiry);
    let minted_at: k8s_openapi::jiff::Timestamp =
        second.metadata.annotations.as_ref().unwrap()["pullsecret-injector.io/minted-at"]
            .parse()
            .unwrap();
    let minted_at = SystemTime::UNIX_EPOCH + Duration::from_secs(minted_at.as_second() as u64);
    assert!(
        minted_at < first_expiry,
        "refreshed before the old credential expired"
    );

    eventually("the copy follows the refresh", DEADLINE, || async {
        let copy = api.get_secret("team-a", TOKEN_SECRET)?;
        (credential(&copy, ECR_HOST).map(|c| c.1).as_deref() == Some("pw-2")).then_some(())
    })
    .await;
    let copy_after = api.get_secret("team-a", TOKEN_SECRET).unwrap();
    assert_eq!(copy_after.metadata.uid, copy.metadata.uid);

    let expiry_metric = hook
        .metric(&format!(
            "pullsecret_injector_token_expiry_timestamp_seconds{{secret=\"{TOKEN_SECRET}\"}}"
        ))
        .await;
    assert!(
        expiry_metric
            >= expires_at(&first)
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs() as f64
    );
}

fn is_managed_copy_label(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_LABEL))
        .is_some_and(|v| v == "pullsecret-injector")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_mints_keep_the_last_good_secret_and_are_reported() {
    let cloud = FakeCloud::start(LIFETIME, "good-1");
    let api = cluster_with(&ecr_policy()).await;
    let hook = webhook(&api, cloud.aws_env()).await;
    let good = token_secret_with_password(&api, "good-1", DEADLINE).await;

    cloud.set_failure(Failure::ServerError);
    cloud.set_password("never-issued");
    let failures = "pullsecret_injector_token_mint_failures_total{secret=\"ecr-pull\",provider=\"ecr\",result=\"refused\"}";
    eventually("a failed refresh is counted", REFRESH_DEADLINE, || async {
        (hook.metric(failures).await >= 1.0).then_some(())
    })
    .await;
    eventually("a Warning Event on the Secret", DEADLINE, || async {
        api.list_events(Some(SOURCE_NS)).into_iter().find(|e| {
            e.reason.as_deref() == Some("TokenMintFailed")
                && e.type_.as_deref() == Some("Warning")
                && e.involved_object.name.as_deref() == Some(TOKEN_SECRET)
        })
    })
    .await;
    let kept = api
        .get_secret(SOURCE_NS, TOKEN_SECRET)
        .expect("still there");
    assert_eq!(kept.data, good.data, "the last good credential stays");
    assert_eq!(kept.metadata.uid, good.metadata.uid);
    // A failed attempt takes back its claim (a write), and nothing else changes.
    let without_claim = |s: &Secret| {
        let mut a = s.metadata.annotations.clone().unwrap_or_default();
        a.remove("pullsecret-injector.io/minting");
        a
    };
    assert_eq!(without_claim(&kept), without_claim(&good));

    // Retried with backoff, and recovers once the cloud answers again.
    cloud.set_failure(Failure::None);
    cloud.set_password("good-2");
    let recovered = token_secret_with_password(&api, "good-2", REFRESH_DEADLINE).await;
    assert_eq!(recovered.metadata.uid, good.metadata.uid);
    assert!(
        !hook
            .logs()
            .iter()
            .any(|l| l.contains("good-1") || l.contains("fake-secret"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_secret_of_that_name_is_never_touched() {
    let cloud = FakeCloud::start(LIFETIME, "pw");
    let api = cluster_with(&ecr_policy()).await;
    let theirs = api.put_secret(&Secret {
        metadata: ObjectMeta {
            name: Some(TOKEN_SECRET.into()),
            namespace: Some(SOURCE_NS.into()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            ByteString(br#"{"auths":{"123456789012.dkr.ecr.eu-west-1.amazonaws.com":{"auth":"QVdTOm1pbmU="}}}"#.to_vec()),
        )])),
        ..Secret::default()
    });
    let hook = webhook(&api, cloud.aws_env()).await;
    eventually("the unmanaged Secret is reported", DEADLINE, || async {
        api.list_events(Some(SOURCE_NS)).into_iter().find(|e| {
            e.reason.as_deref() == Some("UnmanagedSecretExists")
                && e.involved_object.name.as_deref() == Some(TOKEN_SECRET)
        })
    })
    .await;
    let after = api.get_secret(SOURCE_NS, TOKEN_SECRET).unwrap();
    assert_eq!(
        after.metadata.resource_version,
        theirs.metadata.resource_version
    );
    assert_eq!(after.data, theirs.data);
    assert_eq!(
        cloud.calls().ecr,
        0,
        "nothing minted for a Secret we may not write"
    );
    drop(hook);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_and_azure_token_secrets_are_minted() {
    let cloud = FakeCloud::start(LIFETIME, "multi");
    let acr = cloud.https_host();
    let policy = format!(
        "sourceNamespace: {SOURCE_NS}\n\
tokenSources:\n  - secret: gar-pull\n    google:\n      registries: [europe-docker.pkg.dev, gcr.io]\n  - secret: acr-pull\n    azure:\n      registry: \"{acr}\"\n\
rules:\n  - name: gar\n    registries: [\"*.pkg.dev\", gcr.io]\n    secret: gar-pull\n"
    );
    let api = cluster_with(&policy).await;
    let mut env = cloud.google_key_env();
    env.extend(cloud.azure_env());
    let hook = webhook(&api, env).await;
    let gar = eventually("gar-pull minted", DEADLINE, || async {
        let s = api.get_secret(SOURCE_NS, "gar-pull")?;
        credential(&s, "gcr.io").map(|c| (s, c))
    })
    .await;
    assert_eq!(
        gar.1,
        ("oauth2accesstoken".to_string(), "ya29.multi".to_string())
    );
    assert!(credential(&gar.0, "europe-docker.pkg.dev").is_some());
    let acr_secret = eventually("acr-pull minted", DEADLINE, || async {
        let s = api.get_secret(SOURCE_NS, "acr-pull")?;
        credential(&s, &acr).map(|c| (s, c))
    })
    .await;
    assert_eq!(acr_secret.1.0, "00000000-0000-0000-0000-000000000000");
    let left = expires_at(&acr_secret.0)
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        left > Duration::from_secs(5) && left <= LIFETIME,
        "{left:?}"
    );
    drop(hook);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expired_unrefreshed_is_warned_about_at_admission_through_its_copy() {
    // Short-lived, so that it expires within the test once refreshes fail.
    let lifetime = Duration::from_secs(12);
    let cloud = FakeCloud::start(lifetime, "pw-1");
    let api = cluster_with(&ecr_policy()).await;
    let hook = webhook(&api, cloud.aws_env()).await;
    token_secret_with_password(&api, "pw-1", DEADLINE).await;

    // Fresh: injected, copied, no warning.
    let (response, _) = hook.admit("team-a", ECR_IMAGE, false).await;
    assert_eq!(injected_names(&response), vec![TOKEN_SECRET.to_string()]);
    assert!(warnings(&response).is_empty(), "{:?}", warnings(&response));

    // From now on every refresh fails: the last good token stays until it expires.
    cloud.set_failure(Failure::ServerError);
    let failures = "pullsecret_injector_token_mint_failures_total{secret=\"ecr-pull\",provider=\"ecr\",result=\"refused\"}";
    eventually("a failed refresh", REFRESH_DEADLINE, || async {
        (hook.metric(failures).await >= 1.0).then_some(())
    })
    .await;
    let source = api.get_secret(SOURCE_NS, TOKEN_SECRET).expect("kept");
    let expiry_text = source.metadata.annotations.as_ref().unwrap()[EXPIRES_AT].clone();
    eventually(
        "the copy to carry its source's expiry",
        DEADLINE,
        || async {
            let copy = api.get_secret("team-a", TOKEN_SECRET)?;
            (copy.metadata.annotations.as_ref()?.get(EXPIRES_AT) == Some(&expiry_text))
                .then_some(())
        },
    )
    .await;

    let warned = eventually(
        "an admission warning once the token has expired",
        lifetime + DEADLINE,
        || async {
            let (response, _) = hook.admit("team-a", ECR_IMAGE, true).await;
            warnings(&response)
                .into_iter()
                .find(|w| w.contains("token-expired"))
        },
    )
    .await;
    assert!(
        SystemTime::now() >= expires_at(&source),
        "not before expiry"
    );
    assert!(
        warned.contains(&format!("\"{TOKEN_SECRET}\"")) && warned.contains(&expiry_text),
        "names the Secret and its expiry: {warned}"
    );
    assert!(!warned.contains("pw-1"), "{warned}");
}

/// A token Secret as a replica left it `age` ago with a `lifetime` token: managed, minted for
/// the ECR source of [`ecr_policy`].
fn minted_secret(password: &str, age: Duration, lifetime: Duration) -> Secret {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = |secs: i64| {
        k8s_openapi::jiff::Timestamp::from_second(secs)
            .unwrap()
            .to_string()
    };
    let minted = now - age.as_secs() as i64;
    let config = serde_json::json!({"auths": {ECR_HOST: {"username": "AWS", "password": password,
        "auth": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("AWS:{password}"))}}});
    Secret {
        metadata: ObjectMeta {
            name: Some(TOKEN_SECRET.into()),
            namespace: Some(SOURCE_NS.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_LABEL.to_string(),
                "pullsecret-injector".to_string(),
            )])),
            annotations: Some(BTreeMap::from([
                (
                    "pullsecret-injector.io/token-source".to_string(),
                    "ecr".to_string(),
                ),
                (
                    "pullsecret-injector.io/token-config".to_string(),
                    "ecr:eu-west-1:".to_string(),
                ),
                ("pullsecret-injector.io/minted-at".to_string(), at(minted)),
                (
                    EXPIRES_AT.to_string(),
                    at(minted + lifetime.as_secs() as i64),
                ),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            ByteString(config.to_string().into_bytes()),
        )])),
        ..Secret::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_mint_once_per_refresh_period() {
    let lifetime = Duration::from_secs(20);
    let cloud = FakeCloud::start(lifetime, "pw-1");
    let api = cluster_with(&ecr_policy()).await;
    // Half its lifetime is gone: due on both replicas the moment their caches have it, so
    // both decide on the same resourceVersion and race.
    let old = api.put_secret(&minted_secret(
        "pw-0",
        Duration::from_secs(60),
        Duration::from_secs(120),
    ));
    // The first claim is held up on its way, so that the other replica, deciding on the same
    // resourceVersion meanwhile, writes first: the held-up one then meets a 409.
    api.delay(
        Match::any()
            .method("PUT")
            .resource("secrets")
            .name(TOKEN_SECRET),
        Duration::from_secs(3),
        Some(1),
    );
    let (a, b) = tokio::join!(
        webhook(&api, cloud.aws_env()),
        webhook(&api, cloud.aws_env())
    );

    let first = token_secret_with_password(&api, "pw-1", DEADLINE).await;
    assert_eq!(first.metadata.uid, old.metadata.uid, "updated in place");
    // Each later period is minted by whichever replica's refresh point comes first; when a
    // new password shows, every mint of the periods before it has been counted.
    for (n, password) in [(2, "pw-2"), (3, "pw-3"), (4, "pw-4")] {
        cloud.set_password(password);
        token_secret_with_password(&api, password, REFRESH_DEADLINE).await;
        assert_eq!(
            cloud.calls().ecr,
            n,
            "one mint per period, {password}\nreplica a:\n{}\nreplica b:\n{}",
            a.logs().join("\n"),
            b.logs().join("\n")
        );
    }
    let minted = format!(
        "pullsecret_injector_token_mints_total{{secret=\"{TOKEN_SECRET}\",provider=\"ecr\",result=\"minted\"}}"
    );
    let lost = format!(
        "pullsecret_injector_token_mints_total{{secret=\"{TOKEN_SECRET}\",provider=\"ecr\",result=\"lost_race\"}}"
    );
    // Each mint was written by the replica that made it; every write refused with 409 (a
    // stale resourceVersion, as the apiserver answers) was taken as another replica's win.
    eventually("the replicas' counters to settle", DEADLINE, || async {
        let minted = a.metric(&minted).await + b.metric(&minted).await;
        let lost = a.metric(&lost).await + b.metric(&lost).await;
        let conflicts = api
            .requests()
            .into_iter()
            .filter(|r| {
                r.method == "PUT"
                    && r.resource.as_deref() == Some("secrets")
                    && r.status == Some(409)
            })
            .count();
        (minted == 4.0 && conflicts >= 1 && lost as usize == conflicts).then_some(())
    })
    .await;
}

/// Workload identity federation in `serve`: a projected-token file exchanged at Google STS and
/// traded for a service account's token, whose `expireTime` (not STS's much longer
/// `expires_in`) is the Secret's expiry; refreshed in place; a failing exchange keeps the last
/// good Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_federated_token_secret_is_minted_refreshed_and_kept_when_the_exchange_fails() {
    let cloud = FakeCloud::start(LIFETIME, "wif-1");
    cloud.set_sts_lifetime(Duration::from_secs(3000));
    let policy = format!(
        "sourceNamespace: {SOURCE_NS}\n\
tokenSources:\n  - secret: gar-pull\n    google:\n      registries: [europe-docker.pkg.dev]\n\
rules:\n  - name: gar\n    registries: [\"*.pkg.dev\"]\n    secret: gar-pull\n"
    );
    let api = cluster_with(&policy).await;
    let hook = webhook(
        &api,
        cloud.google_external_env(support::cloud::SubjectSource::File, true),
    )
    .await;
    let with_token = |token: &'static str| {
        let api = &api;
        move || async move {
            let s = api.get_secret(SOURCE_NS, "gar-pull")?;
            (credential(&s, "europe-docker.pkg.dev")
                == Some(("oauth2accesstoken".to_string(), token.to_string())))
            .then_some(s)
        }
    };
    let first = eventually(
        "gar-pull minted through federation",
        DEADLINE,
        with_token("ya29.c.wif-1"),
    )
    .await;
    let left = expires_at(&first)
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        left <= LIFETIME && left > Duration::from_secs(5),
        "expires-at from IAM's expireTime: {left:?}"
    );

    cloud.set_password("wif-2");
    let second = eventually(
        "refreshed in place",
        REFRESH_DEADLINE,
        with_token("ya29.c.wif-2"),
    )
    .await;
    assert_eq!(second.metadata.uid, first.metadata.uid);
    assert!(expires_at(&second) > expires_at(&first));

    cloud.set_failure(Failure::ServerError);
    cloud.set_password("never-issued");
    let failures = "pullsecret_injector_token_mint_failures_total{secret=\"gar-pull\",provider=\"google\",result=\"refused\"}";
    eventually("a failed exchange is counted", REFRESH_DEADLINE, || async {
        (hook.metric(failures).await >= 1.0).then_some(())
    })
    .await;
    let kept = api.get_secret(SOURCE_NS, "gar-pull").expect("still there");
    assert_eq!(kept.data, second.data, "the last good token stays");
    assert_eq!(kept.metadata.uid, second.metadata.uid);
    assert_eq!(
        kept.metadata.annotations.as_ref().unwrap()[EXPIRES_AT],
        second.metadata.annotations.as_ref().unwrap()[EXPIRES_AT]
    );
    assert!(
        !hook
            .logs()
            .iter()
            .any(|l| l.contains("ya29") || l.contains(support::cloud::GOOGLE_SUBJECT_TOKEN)),
        "no token in the log"
    );
}
