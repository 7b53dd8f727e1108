//! New namespaces and the namespace cache, end to end: the real `serve` binary against the
//! fake API server. `kubectl apply -f` of a Namespace and a Deployment races the namespace
//! watch; a rule with a selector must still apply to the first Pods.

mod cluster_support;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_support::*;
use support::cli::BIN;
use support::fake_apiserver::{FakeApiServer, Match};

/// A policy whose only rule needs the namespace label `registry-access: gitlab`.
fn selector_policy() -> String {
    format!(
        "{}    namespaces:\n      selector: {{matchLabels: {{registry-access: gitlab}}}}\n",
        policy_yaml(SECRET)
    )
}

async fn cluster_with_selector_rule() -> FakeApiServer {
    let api = cluster().await;
    api.put_configmap(&policy_configmap(&selector_policy()));
    api
}

/// Waits until `serve` logs `message` for an admission in `namespace`.
async fn logged(hook: &Webhook, message: &str, namespace: &str) {
    eventually(
        &format!("log line {message:?} for namespace {namespace}"),
        DEADLINE,
        || async {
            hook.logs()
                .iter()
                .any(|l| l.contains(message) && l.contains(&format!("\"{namespace}\"")))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_whose_namespace_is_created_just_after_the_request_starts_gets_the_selector_rules_secret()
 {
    let api = cluster_with_selector_rule().await;
    let hook = Arc::new(Webhook::start(&api, &[]).await);
    api.clear_requests();

    // The admission arrives first and finds no labels; the Namespace lands while it waits.
    let admission = tokio::spawn({
        let hook = hook.clone();
        async move { hook.admit("team-fresh", IMAGE, false).await }
    });
    logged(&hook, "waiting for namespace labels", "team-fresh").await;
    api.put_namespace("team-fresh", &[("registry-access", "gitlab")]);
    let (response, _) = admission.await.expect("admission task");

    assert_eq!(response["allowed"], true);
    assert_eq!(injected_names(&response), vec![SECRET.to_string()]);
    assert!(warnings(&response).is_empty(), "{:?}", warnings(&response));
    let copy = api
        .get_secret("team-fresh", SECRET)
        .expect("copy exists before the response");
    assert!(is_managed_copy(&copy), "{:?}", copy.metadata);
    // The labels came through the watch, not from a read during the admission.
    assert_eq!(
        api.count(&Match::any().resource("namespaces").watch(false)),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_in_a_namespace_that_never_appears_is_answered_within_the_wait_budget_with_a_warning() {
    let api = cluster_with_selector_rule().await;
    // A copy deadline far above the label wait: the answer must not take that long.
    let hook = Webhook::start(&api, &["--copy-deadline", "10s"]).await;
    api.clear_requests();

    let (response, elapsed) = hook.admit("team-ghost", IMAGE, false).await;

    assert_eq!(response["allowed"], true);
    assert!(injected_names(&response).is_empty());
    let warns = warnings(&response);
    assert!(
        warns.iter().any(|w| w.contains("\"gitlab\"")
            && w.contains("\"team-ghost\"")
            && w.contains("not known yet")),
        "{warns:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}; the label wait is bounded well below the 10s copy deadline"
    );
    logged(&hook, "waited for namespace labels", "team-ghost").await;
    // Waiting reads the cache only; nothing is written for a namespace that is not there.
    assert_eq!(
        api.count(&Match::any().resource("namespaces").watch(false)),
        0
    );
    assert_eq!(api.count(&Match::any().method("POST")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_without_selector_rules_is_not_waited_for() {
    let api = cluster().await;
    let hook = Webhook::start(&api, &[]).await;
    api.put_namespace("team-plain", &[]);

    // The policy has no selector, so unknown labels change nothing and are not waited for.
    let (response, _) = hook.admit("team-plain", IMAGE, false).await;
    assert_eq!(injected_names(&response), vec![SECRET.to_string()]);
    let (response, _) = hook.admit("team-unknown", IMAGE, true).await;
    assert_eq!(injected_names(&response), vec![SECRET.to_string()]);
    assert!(
        !hook
            .logs()
            .iter()
            .any(|l| l.contains("waiting for namespace labels")),
        "waited although no rule has a selector"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_cluster_side_and_exits_zero() {
    let api = cluster().await;
    pullsecret_injector::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--self-signed"])
        .arg("--self-signed-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--namespace", WEBHOOK_NS, "--policy-configmap", POLICY_CM])
        .args(["--shutdown-grace", "2s"])
        .env("KUBECONFIG", api.kubeconfig_path())
        .env("RUST_LOG", "info")
        .env_remove("POD_NAMESPACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let stderr = child.stderr.take().expect("stderr piped");
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
    let lines = || logs.lock().unwrap_or_else(|e| e.into_inner()).clone();

    // Ready on /readyz: the server runs, so its signal handlers are installed.
    let admin: String = eventually("serve reports its admin listener", DEADLINE, || {
        let admin = lines().iter().find_map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).ok()?;
            line.get("admin")?.as_str().map(String::from)
        });
        std::future::ready(admin)
    })
    .await;
    eventually(
        "serve ready with the cluster side running",
        DEADLINE,
        || async {
            let ready = reqwest::get(format!("http://{admin}/readyz"))
                .await
                .is_ok_and(|r| r.status().is_success());
            (ready && api.active_watches() > 0).then_some(())
        },
    )
    .await;

    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let status = eventually("serve exits after SIGTERM", DEADLINE, || {
        std::future::ready(child.try_wait().expect("wait for serve"))
    })
    .await;

    let lines = lines();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        lines.join("\n")
    );
    let at = |message: &str| {
        lines
            .iter()
            .position(|l| l.contains(message))
            .unwrap_or_else(|| panic!("no log line {message:?}:\n{}", lines.join("\n")))
    };
    assert!(
        at("shutdown complete") < at("cluster side stopped"),
        "the cluster side stops after the drain"
    );
}
