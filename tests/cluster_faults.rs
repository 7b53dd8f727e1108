//! A failing or slow API server never holds a Pod past the copy deadline; copies converge
//! once it recovers, and retries stop when the copy is no longer needed.

mod cluster_support;
mod support;

use std::time::Duration;

use cluster_support::*;
use support::fake_apiserver::{Fault, Match};

const COPY_DEADLINE: Duration = Duration::from_millis(500);
/// Room for TLS, JSON and scheduling on a busy CI machine; far below any webhook timeout.
const MARGIN: Duration = Duration::from_millis(700);

fn secret_creates() -> Match {
    Match::any().method("POST").resource("secrets")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_are_answered_within_the_deadline_while_the_api_fails_and_copies_converge_after()
{
    let api = cluster().await;
    let hook = Webhook::start(&api, &["--copy-deadline", "500ms"]).await;

    let too_many = Fault::TooManyRequests {
        retry_after_secs: 1,
    };
    let cases = [
        (
            "internal-error",
            secret_creates(),
            Some(Fault::InternalError),
        ),
        ("too-many-requests", secret_creates(), Some(too_many)),
        ("dropped-connection", secret_creates(), Some(Fault::Drop)),
        ("forbidden", secret_creates(), Some(Fault::forbidden())),
        // Every request fails, lists and new watches too.
        ("everything-fails", Match::any(), Some(Fault::InternalError)),
        // Slower than the deadline: the create lands later, without a retry.
        ("slow", secret_creates(), None),
    ];
    for (name, when, fault) in cases {
        let ns = format!("fault-{name}");
        api.put_namespace(&ns, &[]);
        let fault = match fault {
            Some(fault) => api.fail(when, fault, None),
            None => api.delay(when, Duration::from_secs(3), None),
        };
        for _ in 0..3 {
            let (response, took) = hook.admit(&ns, IMAGE, false).await;
            assert!(
                took < COPY_DEADLINE + MARGIN,
                "{name}: answered after {took:?}, deadline {COPY_DEADLINE:?}"
            );
            assert_eq!(response["allowed"], true, "{name}");
            assert_eq!(
                injected_names(&response),
                vec![SECRET.to_string()],
                "{name}: Pod still gets the reference"
            );
            let warns = warnings(&response);
            assert!(
                warns
                    .iter()
                    .any(|w| w.contains(SECRET) && w.contains("background")),
                "{name}: {warns:?}"
            );
        }
        api.clear_fault(fault);
        eventually(
            &format!("{name}: copy after recovery"),
            DEADLINE,
            || async {
                api.get_secret(&ns, SECRET)
                    .filter(is_managed_copy)
                    .map(|_| ())
            },
        )
        .await;
    }
    assert!(
        hook.metric("pullsecret_injector_secret_copies_total{operation=\"failed\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_when_the_namespace_is_gone_or_the_policy_drops_the_secret() {
    let api = cluster().await;
    let hook = Webhook::start(&api, &["--copy-deadline", "500ms"]).await;

    // A terminating namespace refuses new objects: the Pod passes, the copy waits.
    api.put_namespace("team-t", &[]);
    let forbidden = api.fail(
        secret_creates().namespace("team-t"),
        Fault::forbidden(),
        None,
    );
    let (response, took) = hook.admit("team-t", IMAGE, false).await;
    assert!(took < COPY_DEADLINE + MARGIN, "{took:?}");
    assert_eq!(injected_names(&response), vec![SECRET.to_string()]);
    assert!(!warnings(&response).is_empty());
    api.terminate_namespace("team-t");
    api.finalize_namespace("team-t");
    hook.wait_log("retry for a deleted namespace dropped", DEADLINE, |l| {
        l.contains("namespace gone; copy dropped") && l.contains("team-t")
    })
    .await;
    api.clear_fault(forbidden);

    // The policy stops naming the secret: a pending copy is dropped, not retried forever.
    api.put_namespace("team-p", &[]);
    let failing = api.fail(
        secret_creates().namespace("team-p"),
        Fault::InternalError,
        None,
    );
    let (response, _) = hook.admit("team-p", IMAGE, false).await;
    assert!(warnings(&response).iter().any(|w| w.contains("background")));
    api.put_secret(&pull_secret(SOURCE_NS, "other-token", "x"));
    api.put_configmap(&policy_configmap(&policy_yaml("other-token")));
    hook.wait_log(
        "retry for a secret the policy no longer names dropped",
        DEADLINE,
        |l| l.contains("policy no longer names this copy") && l.contains("team-p"),
    )
    .await;
    api.clear_fault(failing);
    assert!(api.get_secret("team-p", SECRET).is_none());
}
