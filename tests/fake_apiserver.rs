//! Conformance of the fake API server: driven with the real kube-rs client, it answers
//! like kube-apiserver.

mod support;

use support::fake_apiserver::FakeApiServer;

#[tokio::test]
async fn smoke() {
    let api = FakeApiServer::start().await;
    let _c = api.client().await;
}
