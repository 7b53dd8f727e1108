//! Hostile clients against the real `serve` binary on 127.0.0.1: each test reproduces one attack
//! from docs/security.md and checks that the webhook refuses it cleanly, frees what it held, and
//! stays within its memory bound (peak RSS from /proc/PID/status, printed with the numbers).
//!
//! `PULLSECRET_INJECTOR_BIN=target/release/pullsecret-injector cargo test --test hostile --
//! --nocapture --test-threads 1` measures a release build (the table in docs/security.md).

mod support {
    pub mod serve;
    pub mod shared;
    pub mod tls;
}

use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use support::serve::{DEADLINE, Options, Serve, eventually};
use support::shared::sample;
use support::tls::{Leaf, SecretVolume, TestCa, client, read_status, tls_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POLICY: &str = "\
sourceNamespace: registry-credentials
rules:
  - name: example
    registries: [\"registry.example.com:5000\"]
    secret: example-pull
";

const MIB: usize = 1024 * 1024;
/// The memory bound the defaults must keep (the chart's limit is twice this).
const RSS_BOUND_MIB: f64 = 128.0;

struct Fixture {
    _dir: tempfile::TempDir,
    ca: TestCa,
    first: Leaf,
    volume: SecretVolume,
    policy: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let first = ca.leaf();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let volume = SecretVolume::new(
        &certs,
        &[
            ("tls.crt", first.cert.as_bytes()),
            ("tls.key", first.key.as_bytes()),
        ],
    );
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    Fixture {
        _dir: dir,
        ca,
        first,
        volume,
        policy,
    }
}

fn start(f: &Fixture, extra: &[&str]) -> Serve {
    start_with(f, &Options::default(), extra)
}

fn start_with(f: &Fixture, options: &Options, extra: &[&str]) -> Serve {
    let cert = f.volume.path("tls.crt");
    let key = f.volume.path("tls.key");
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--policy",
        f.policy.to_str().unwrap(),
        "--reload-interval",
        "100ms",
    ];
    args.extend_from_slice(extra);
    Serve::start_with(options, &args)
}

/// A field of /proc/PID/status in MiB (`VmHWM` is the peak resident set, `VmRSS` the current).
fn proc_status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib / 1024.0
}

fn peak_rss_mib(serve: &Serve) -> f64 {
    proc_status_mib(serve.pid(), "VmHWM:")
}

/// Asserts the peak RSS bound and prints the numbers for docs/security.md.
fn report_rss(serve: &Serve, attack: &str, start_mib: f64) -> f64 {
    let peak = peak_rss_mib(serve);
    println!("attack: {attack}: RSS at start {start_mib:.1} MiB, peak {peak:.1} MiB");
    assert!(
        peak < RSS_BOUND_MIB,
        "{attack}: peak RSS {peak:.1} MiB is over {RSS_BOUND_MIB} MiB"
    );
    peak
}

/// A review answered 200 with the sample's uid: the webhook still does its job.
async fn normal_review_is_answered(serve: &Serve, ca_pem: &str) {
    let review = sample("01_pod_create_replicaset.json");
    let res = serve
        .https_post(ca_pem, true, "/mutate?timeout=10s", review)
        .await
        .expect("a normal review gets an answer");
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(answer["response"]["allowed"], true);
}

/// The log lines whose message is `message`.
fn log_lines_with(serve: &Serve, message: &str) -> Vec<String> {
    let needle = format!("\"message\":\"{message}");
    serve
        .logs()
        .into_iter()
        .filter(|l| l.contains(&needle))
        .collect()
}

async fn h2_client(serve: &Serve, ca_pem: &str) -> h2::client::SendRequest<Bytes> {
    let tls = tls_connect(serve.https, ca_pem, b"h2").await.unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_90_streams_of_3_mib_minus_1_byte_are_answered_and_freed_under_128_mib() {
    let f = fixture();
    let serve = start(&f, &[]);
    serve.wait_ready_within(DEADLINE).await;
    let start_mib = proc_status_mib(serve.pid(), "VmRSS:");

    let mut client = h2_client(&serve, &f.ca.pem).await;
    let body = Bytes::from(vec![b' '; 3 * MIB - 1]);
    let mut responses = Vec::new();
    let mut open_streams = Vec::new();
    for _ in 0..90 {
        client = client.ready().await.unwrap();
        let req = http::Request::post(serve.https_url("/mutate"))
            .header("content-type", "application/json")
            .header("content-length", (3 * MIB).to_string())
            .body(())
            .unwrap();
        let (response, mut stream) = client.send_request(req, false).unwrap();
        // Queued in the client; h2 flow control lets the server take it as it reads.
        stream.send_data(body.clone(), false).unwrap();
        responses.push(response);
        open_streams.push(stream);
    }

    // The webhook keeps working while the 90 bodies hang and hold the whole shared body budget
    // (32 MiB by default: ten 3 MiB reservations): small reviews have their own reserve.
    eventually(
        "the hanging bodies to fill the body budget",
        DEADLINE,
        || async {
            let held = serve
                .metric("pullsecret_injector_request_body_bytes_in_memory")
                .await;
            (held >= 30.0 * MIB as f64).then_some(())
        },
    )
    .await;
    normal_review_is_answered(&serve, &f.ca.pem).await;

    let mut timed_out = 0;
    let mut busy = 0;
    for response in responses {
        let response = tokio::time::timeout(DEADLINE, response)
            .await
            .expect("every stream is answered")
            .expect("an answer, not a reset");
        match response.status().as_u16() {
            408 => timed_out += 1,
            503 => busy += 1,
            other => panic!("unexpected status {other}"),
        }
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert!(json["error"].is_string(), "{json}");
    }
    println!(
        "90 streams: {timed_out} answered 408 (body incomplete), {busy} answered 503 (budget)"
    );
    assert!(timed_out > 0, "some bodies were read until the timeout");
    assert_eq!(timed_out + busy, 90);
    serve
        .wait_metric(
            "pullsecret_injector_request_body_bytes_in_memory",
            0.0,
            DEADLINE,
        )
        .await;
    assert_eq!(
        serve
            .metric("pullsecret_injector_admission_requests_total{result=\"timeout\"}")
            .await,
        f64::from(timed_out)
    );
    report_rss(&serve, "h2, 90 streams of 3 MiB - 1 byte", start_mib);
    drop(open_streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_100_bodies_trickling_1_byte_per_500ms_get_408_and_are_closed() {
    let f = fixture();
    let serve = start(&f, &[]);
    serve.wait_ready_within(DEADLINE).await;
    let start_mib = proc_status_mib(serve.pid(), "VmRSS:");

    let mut clients = Vec::new();
    for _ in 0..100 {
        let tls = tls_connect(serve.https, &f.ca.pem, b"http/1.1")
            .await
            .unwrap();
        let (mut reader, mut writer) = tokio::io::split(tls);
        let writing = tokio::spawn(async move {
            writer
                .write_all(b"POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n")
                .await?;
            // At most 120 bytes (a minute): the server must have given up long before.
            for _ in 0..120 {
                writer.write_all(b" ").await?;
                writer.flush().await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok::<_, std::io::Error>(())
        });
        let reading = tokio::spawn(async move {
            let status = read_status(&mut reader).await;
            let mut rest = Vec::new();
            // Then the server closes: read_to_end returns (end of stream or a reset) instead of
            // hanging, which the caller's deadline checks.
            let _ = reader.read_to_end(&mut rest).await;
            (status, rest)
        });
        clients.push((writing, reading));
    }
    let mut answered = 0;
    for (writing, reading) in clients {
        let (status, rest) = tokio::time::timeout(DEADLINE, reading)
            .await
            .expect("the connection is answered and closed")
            .unwrap();
        assert_eq!(status, Some(408));
        let text = String::from_utf8_lossy(&rest);
        assert!(text.contains("\"error\""), "{text}");
        answered += 1;
        writing.abort();
    }
    println!("100 trickling http/1.1 bodies: {answered} answered 408 and closed");
    eventually("all connections closed", DEADLINE, || async {
        (serve.metric("pullsecret_injector_https_connections").await == 0.0).then_some(())
    })
    .await;
    normal_review_is_answered(&serve, &f.ca.pem).await;
    report_rss(
        &serve,
        "http/1.1, 100 bodies at 1 byte per 0.5 s",
        start_mib,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_1500_idle_connections_are_capped_at_256_and_closed_with_goaway_when_idle() {
    let f = fixture();
    let serve = start(&f, &["--idle-timeout", "20s"]);
    serve.wait_ready_within(DEADLINE).await;
    let start_mib = proc_status_mib(serve.pid(), "VmRSS:");

    // Opened 100 at a time; each that is accepted makes one request, then idles.
    let mut held = Vec::new();
    let mut refused = 0;
    let mut peak_open = 0.0f64;
    let opening_started = std::time::Instant::now();
    for batch in 0..15 {
        let mut opening = Vec::new();
        for _ in 0..100 {
            let addr = serve.https;
            let ca = f.ca.pem.clone();
            let url = serve.https_url("/healthz");
            opening.push(tokio::spawn(async move {
                let tls = tls_connect(addr, &ca, b"h2").await.ok()?;
                let (client, conn) = h2::client::handshake(tls).await.ok()?;
                let conn = tokio::spawn(conn);
                let mut client = client.ready().await.ok()?;
                let req = http::Request::get(url).body(()).unwrap();
                let (response, _) = client.send_request(req, true).ok()?;
                let status = response.await.ok()?.status();
                Some((status, client, conn))
            }));
        }
        for opened in opening {
            match opened.await.unwrap() {
                Some((status, client, conn)) => {
                    assert_eq!(status.as_u16(), 404);
                    held.push((client, conn));
                }
                None => refused += 1,
            }
        }
        if batch % 3 == 2 {
            peak_open = peak_open.max(serve.metric("pullsecret_injector_https_connections").await);
        }
    }
    let accepted = held.len();
    println!("opened in {:?}", opening_started.elapsed());
    println!(
        "1500 h2 connections: {accepted} accepted, {refused} refused; at most {peak_open} open at once"
    );
    assert!(peak_open <= 256.0, "{peak_open} connections open");
    assert!(accepted >= 256, "{accepted}");
    assert_eq!(
        serve
            .metric("pullsecret_injector_https_connections_refused_total")
            .await,
        refused as f64
    );
    report_rss(&serve, "h2, 1500 idle connections", start_mib);

    // Each idle connection is closed by the server (GOAWAY, then close): the client's
    // connection task ends.
    for (client, conn) in held {
        let ended = tokio::time::timeout(DEADLINE, conn)
            .await
            .expect("the idle connection was closed");
        assert!(ended.is_ok(), "{ended:?}");
        drop(client);
    }
    serve
        .wait_metric("pullsecret_injector_https_connections", 0.0, DEADLINE)
        .await;
    assert_eq!(
        serve
            .metric("pullsecret_injector_https_connections_idle_closed_total")
            .await,
        accepted as f64
    );
    normal_review_is_answered(&serve, &f.ca.pem).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_of_4_mib_is_a_readable_json_413_on_http1_and_h2_logged_once_and_counted() {
    let f = fixture();
    let serve = start(&f, &[]);
    serve.wait_ready_within(DEADLINE).await;
    let start_mib = proc_status_mib(serve.pid(), "VmRSS:");
    let body = vec![b' '; 4 * MIB];

    // HTTP/1.1 with Content-Length, written whole the way Go's client writes it: the write must
    // not fail (no reset), and the answer is the 413 with a JSON body.
    let tls = tls_connect(serve.https, &f.ca.pem, b"http/1.1")
        .await
        .unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);
    let upload = {
        let body = body.clone();
        tokio::spawn(async move {
            let head = format!(
                "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            writer.write_all(head.as_bytes()).await?;
            writer.write_all(&body).await?;
            writer.flush().await?;
            Ok::<_, std::io::Error>(writer)
        })
    };
    let status = tokio::time::timeout(DEADLINE, read_status(&mut reader))
        .await
        .unwrap();
    assert_eq!(status, Some(413));
    let mut json = vec![0u8; 256];
    let n = reader.read(&mut json).await.unwrap();
    let text = String::from_utf8_lossy(&json[..n]).into_owned();
    assert_eq!(
        text, r#"{"error":"request body is larger than 3145728 bytes"}"#,
        "the same JSON error body as every other error"
    );
    let writer = tokio::time::timeout(DEADLINE, upload)
        .await
        .unwrap()
        .unwrap()
        .expect("the whole body was written without a reset: the server read it");
    drop(writer);

    // h2 (reqwest, then curl): the stream gets the 413 and its body, not a stream error.
    let h2 = serve
        .https_post(&f.ca.pem, false, "/mutate", body.clone())
        .await
        .unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(h2.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h2.text().await.unwrap(), text);

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &f.ca.pem).unwrap();
    let payload = dir.path().join("body.json");
    std::fs::write(&payload, &body).unwrap();
    let curl = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--http2", "--cacert"])
        .arg(&ca)
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", payload.display()))
        .args(["--write-out", "\n%{http_version} %{http_code}"])
        .arg(serve.https_url("/mutate"))
        .output()
        .expect("curl runs");
    let out = String::from_utf8_lossy(&curl.stdout);
    assert!(
        curl.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&curl.stderr)
    );
    assert_eq!(out, format!("{text}\n2 413"));

    // Logged once per refusal, counted in the request metric.
    serve
        .wait_metric(
            "pullsecret_injector_admission_requests_total{result=\"too_large\"}",
            3.0,
            DEADLINE,
        )
        .await;
    assert_eq!(
        log_lines_with(&serve, "request body over the limit").len(),
        3,
        "{:?}",
        serve.logs()
    );
    report_rss(&serve, "4 MiB bodies over http/1.1 and h2", start_mib);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_of_2_mb_and_uid_of_2_5_mb_are_cut_short_in_answers_and_logs() {
    let f = fixture();
    let serve = start(&f, &[]);
    serve.wait_ready_within(DEADLINE).await;

    let kind = "K".repeat(2_000_000);
    let body = format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"{kind}","request":{{}}}}"#);
    let res = serve
        .https_post(&f.ca.pem, false, "/mutate", body)
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::BAD_REQUEST);
    let text = res.text().await.unwrap();
    assert!(text.len() < 512, "{} bytes: {}", text.len(), &text[..200]);
    assert!(text.contains("(2000000 bytes)"), "{text}");

    let mut review: serde_json::Value =
        serde_json::from_slice(&sample("01_pod_create_replicaset.json")).unwrap();
    let uid = "u".repeat(2_500_000);
    review["request"]["uid"] = serde_json::Value::String(uid.clone());
    let res = serve
        .https_post(
            &f.ca.pem,
            false,
            "/mutate",
            serde_json::to_vec(&review).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        answer["response"]["uid"].as_str(),
        Some(uid.as_str()),
        "the apiserver needs its uid back exactly"
    );

    serve
        .wait_log("the admission logged", DEADLINE, |l| l.contains("admitted"))
        .await;
    let longest = serve.logs().iter().map(String::len).max().unwrap();
    println!("2 MB kind, 2.5 MB uid: longest log line {longest} bytes");
    assert!(longest < 4096, "a log line of {longest} bytes");
    let admitted = log_lines_with(&serve, "admitted");
    assert_eq!(admitted.len(), 1);
    assert_eq!(
        admitted[0].matches("(2500000 bytes)").count(),
        1,
        "the uid is recorded once: {}",
        admitted[0]
    );
}

#[tokio::test]
async fn expired_or_foreign_pair_on_reload_is_refused_with_warn_metric_and_readyz_detail() {
    let mut f = fixture();
    let serve = start(&f, &["--tls-server-name", "pullsecret-injector.psi.svc"]);
    let old = f.first.fingerprint();
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let names = ["127.0.0.1", "pullsecret-injector.psi.svc"];

    // The expiry gauge shows the served certificate's notAfter.
    let served_expiry = serve
        .metric("pullsecret_injector_tls_certificate_expiry_timestamp_seconds")
        .await;
    let leaf_expiry = x509_not_after(&f.first.cert);
    assert_eq!(served_expiry, leaf_expiry as f64);

    let expired = f.ca.leaf_with(&names, now - day * 30, now - day);
    f.volume.swap(&[
        ("tls.crt", expired.cert.as_bytes()),
        ("tls.key", expired.key.as_bytes()),
    ]);
    serve
        .wait_metric(
            "pullsecret_injector_tls_reload_rejections_total{reason=\"expired\"}",
            1.0,
            DEADLINE,
        )
        .await;
    assert_eq!(serve.served_fingerprint(&f.ca.pem).await, old);
    let (status, readyz) = serve.admin_get("/readyz").await;
    assert_eq!(status, 200, "the pair in use is still good: {readyz}");
    assert!(readyz.contains("the certificate expired at"), "{readyz}");
    let refusal = log_lines_with(&serve, "new certificate rejected");
    assert_eq!(refusal.len(), 1);
    assert!(refusal[0].contains("\"level\":\"WARN\""), "{}", refusal[0]);

    let early = f.ca.leaf_with(&names, now + day, now + day * 30);
    f.volume.swap(&[
        ("tls.crt", early.cert.as_bytes()),
        ("tls.key", early.key.as_bytes()),
    ]);
    serve
        .wait_metric(
            "pullsecret_injector_tls_reload_rejections_total{reason=\"not_yet_valid\"}",
            1.0,
            DEADLINE,
        )
        .await;

    let foreign =
        f.ca.leaf_with(&["127.0.0.1", "other.psi.svc"], now - day, now + day * 30);
    f.volume.swap(&[
        ("tls.crt", foreign.cert.as_bytes()),
        ("tls.key", foreign.key.as_bytes()),
    ]);
    serve
        .wait_metric(
            "pullsecret_injector_tls_reload_rejections_total{reason=\"name_not_covered\"}",
            1.0,
            DEADLINE,
        )
        .await;
    assert_eq!(serve.served_fingerprint(&f.ca.pem).await, old);
    let (_, readyz) = serve.admin_get("/readyz").await;
    assert!(
        readyz.contains("does not cover pullsecret-injector.psi.svc"),
        "{readyz}"
    );

    // A good pair is still taken, and the gauge follows it.
    let good = f.ca.leaf_with(&names, now - day, now + day * 60);
    f.volume.swap(&[
        ("tls.crt", good.cert.as_bytes()),
        ("tls.key", good.key.as_bytes()),
    ]);
    let expected = good.fingerprint();
    eventually("the good pair to be served", DEADLINE, || {
        let (serve, pem, expected) = (&serve, f.ca.pem.clone(), expected.clone());
        async move { (serve.served_fingerprint(&pem).await == expected).then_some(()) }
    })
    .await;
    assert_eq!(
        serve
            .metric("pullsecret_injector_tls_certificate_expiry_timestamp_seconds")
            .await,
        x509_not_after(&good.cert) as f64
    );
}

/// notAfter of a PEM certificate, in Unix seconds.
fn x509_not_after(pem: &str) -> i64 {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.validity().not_after.timestamp()
}

#[test]
fn expired_pair_at_start_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let leaf = ca.leaf_with(&["127.0.0.1"], now - day * 30, now - day);
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &leaf.cert).unwrap();
    std::fs::write(&key, &leaf.key).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let run = std::process::Command::new(support::serve::bin())
        .args(["serve", "--no-cluster", "--policy"])
        .arg(&policy)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("the certificate expired at") && stderr.contains("renew it"),
        "{stderr}"
    );
}

#[tokio::test]
async fn handshake_failures_are_counted_by_reason_and_logged_at_a_bounded_rate() {
    let f = fixture();
    let serve = start(&f, &[]);
    // A client whose CA is not ours: what a stale caBundle looks like after a rotation. Both
    // test CAs are named "test CA", so the client finds the issuer by name and its signature
    // check fails: rustls says so with a decrypt_error alert (a CA of another name: unknown_ca).
    let stranger = TestCa::new();
    for _ in 0..20 {
        assert!(
            tls_connect(serve.https, &stranger.pem, b"h2")
                .await
                .is_err()
        );
    }
    // Plain HTTP on the TLS port.
    let mut plain = tokio::net::TcpStream::connect(serve.https).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut sink)).await;

    serve
        .wait_metric(
            "pullsecret_injector_tls_handshake_failures_total{reason=\"decrypt_error\"}",
            20.0,
            DEADLINE,
        )
        .await;
    serve
        .wait_metric(
            "pullsecret_injector_tls_handshake_failures_total{reason=\"not_tls\"}",
            1.0,
            DEADLINE,
        )
        .await;
    let logged = log_lines_with(&serve, "TLS handshake failed");
    println!("21 failed handshakes: {} log lines", logged.len());
    assert!(
        logged
            .iter()
            .filter(|l| l.contains("decrypt_error"))
            .count()
            <= 2,
        "{logged:?}"
    );
    assert!(logged.iter().any(|l| l.contains("not_tls")), "{logged:?}");
    // And a client with the right CA is served.
    let ok = serve.https_get(&f.ca.pem, false, "/mutate").await.unwrap();
    assert_eq!(ok.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);
}

/// An AdmissionReview of a Pod with `containers` containers.
fn review_with_containers(containers: usize) -> Vec<u8> {
    let mut review: serde_json::Value =
        serde_json::from_slice(&sample("01_pod_create_replicaset.json")).unwrap();
    let list: Vec<serde_json::Value> = (0..containers)
        .map(|i| {
            serde_json::json!({
                "name": format!("c{i}"),
                "image": format!("registry.example.com:5000/team/app-{i}:v1"),
                "resources": {},
            })
        })
        .collect();
    review["request"]["object"]["spec"]["containers"] = serde_json::Value::Array(list);
    serde_json::to_vec(&review).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_within_the_2s_probe_timeout_while_64_reviews_of_5000_containers_run() {
    let f = fixture();
    let serve = start(&f, &[]);
    serve.wait_ready_within(DEADLINE).await;
    let start_mib = proc_status_mib(serve.pid(), "VmRSS:");
    let body = Bytes::from(review_with_containers(5000));
    println!("review of 5000 containers: {} bytes", body.len());

    let http = client(&f.ca.pem, false, false);
    let url = serve.https_url("/mutate?timeout=10s");
    let reviews: Vec<_> = (0..64)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                http.post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();

    // Probed like the kubelet does (2 s timeout) until every review has its answer.
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut probes = 0;
    while reviews.iter().any(|r| !r.is_finished()) {
        let res = probe
            .get(serve.admin_url("/readyz"))
            .send()
            .await
            .expect("/readyz answers within the probe timeout");
        assert_eq!(res.status(), reqwest::StatusCode::OK);
        probes += 1;
        assert!(probes < 2000, "reviews take unreasonably long");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ok = 0;
    let mut busy = 0;
    for review in reviews {
        match review.await.unwrap().expect("every review is answered") {
            200 => ok += 1,
            503 => busy += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    println!(
        "64 reviews of 5000 containers: {ok} answered 200, {busy} answered 503; {probes} probes all answered in time"
    );
    assert!(ok > 0);
    report_rss(&serve, "64 reviews of a 5000-container Pod", start_mib);
}

/// Builds the Go client in tests/go/post_large (Go's net/http, the API server's HTTP stack).
fn go_client() -> std::path::PathBuf {
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join("post_large");
    let build = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/post_large"))
        .env("GO111MODULE", "off")
        .env("GOCACHE", tmp.join("gocache"))
        .output()
        .expect("go is installed (scripts/setup-apt.sh installs golang-go)");
    assert!(
        build.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    out
}

#[tokio::test]
async fn go_client_reads_the_413_for_a_4_mib_body_on_http1_and_h2() {
    let f = fixture();
    let serve = start(&f, &[]);
    let client = go_client();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &f.ca.pem).unwrap();
    for (protocol, proto) in [("h1", "HTTP/1.1"), ("h2", "HTTP/2.0")] {
        let run = std::process::Command::new(&client)
            .arg(&ca)
            .arg(serve.https_url("/mutate"))
            .arg((4 * MIB).to_string())
            .arg(protocol)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{protocol}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(
            stdout,
            format!(r#"{proto} 413 {{"error":"request body is larger than 3145728 bytes"}}"#)
        );
    }
}

/// A log collector that stops reading (a full container-runtime pipe) must not stop
/// admissions: serve's log lines go through a bounded queue to a writer thread, and what does
/// not fit is dropped and counted, never waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stderr_does_not_stall_8000_admissions_and_dropped_lines_are_counted() {
    const REVIEWS: usize = 8000;
    const IN_FLIGHT: usize = 32;
    let f = fixture();
    let options = Options {
        stall_stderr: true,
        ..Options::default()
    };
    let serve = start_with(&f, &options, &[]);
    serve.wait_ready_within(DEADLINE).await;
    // Every admission logs a line; the unread pipe holds about 64 KiB of them.
    let review = Bytes::from(sample("01_pod_create_replicaset.json"));
    let http = client(&f.ca.pem, false, false);
    let url = serve.https_url("/mutate?timeout=10s");
    let mut answered = 0;
    let mut next = 0;
    let mut running = tokio::task::JoinSet::new();
    while answered < REVIEWS {
        while next < REVIEWS && running.len() < IN_FLIGHT {
            let (http, url, review) = (http.clone(), url.clone(), review.clone());
            running.spawn(async move {
                let res = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(review)
                    .send()
                    .await?;
                let status = res.status().as_u16();
                // Read to the end: a dropped h2 response is a client-side stream reset, and
                // the client's h2 gives up on a connection after too many of those.
                res.bytes().await.map(|_| status)
            });
            next += 1;
        }
        let status = tokio::time::timeout(Duration::from_secs(10), running.join_next())
            .await
            .expect("every review is answered within 10 s although stderr is not read")
            .expect("a review in flight")
            .unwrap()
            .expect("the review gets an answer");
        assert_eq!(status, 200);
        answered += 1;
    }
    let dropped = serve
        .metric("pullsecret_injector_log_lines_dropped_total")
        .await;
    println!("{REVIEWS} reviews answered with stderr unread; {dropped} log lines dropped");
    assert!(
        dropped > 0.0,
        "the unread pipe and the queue cannot hold {REVIEWS} lines"
    );
}
