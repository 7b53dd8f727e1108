//! admission::respond on arbitrary bytes never panics: either an AdmissionReview response
//! (JSON echoing the request uid) or an error.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pullsecret_injector::admission::{self, respond};
use pullsecret_injector::policy::Policy;
use pullsecret_injector::state::AppState;

const POLICY: &str = "\
sourceNamespace: registry-credentials
excludeNamespaces: [kube-system]
rules:
  - name: hub
    registries: [docker.io]
    secret: hub-pull
  - name: ghcr
    registries: [\"ghcr.io/acme/\"]
    secret: ghcr-pull
    namespaces:
      include: [\"team-*\"]
  - name: quay
    registries: [quay.io]
    secret: quay-pull
    namespaces:
      selector:
        matchLabels: {registry-access: quay}
  - name: ecr
    registries: [\"*.dkr.ecr.*.amazonaws.com\"]
    secret: ecr-pull
";

static STATE: LazyLock<AppState> = LazyLock::new(|| {
    let policy = Policy::parse(POLICY, "fuzz.yaml").expect("fuzz policy is valid");
    AppState::offline(Some(policy), "pullsecret-injector")
});

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
});

fuzz_target!(|data: &[u8]| {
    match RUNTIME.block_on(respond(&STATE, data, None)) {
        Ok(answer) => {
            let review: serde_json::Value =
                serde_json::from_slice(&answer.body).expect("the response body is JSON");
            assert_eq!(review["kind"], admission::KIND);
            assert_eq!(review["apiVersion"], admission::API_VERSION);
            assert_eq!(review["response"]["uid"], answer.uid.as_str());
            assert_eq!(review["response"]["allowed"], true);
            assert!(!answer.uid.is_empty());
        }
        Err(err) => {
            let _ = (err.status(), err.body(), err.metric_label());
        }
    }
});
