//! `wi-webhook serve` over real TLS on port 0: certificates from rcgen in a kubelet Secret-volume layout, a real
//! HTTPS client (rustls + hyper) that trusts only the test CA.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use http::StatusCode;
use serde_json::{Value, json};
use wi_webhook::review::decode_patch;

fn fixture_bodies() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixture("admission/raw"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn every_captured_request_is_admitted_over_tls_on_http1_and_http2() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    install_leaf(dir.path(), &pki.leaf());
    let server = start(serve_args(dir.path(), &[]), Arc::new(fixture_lookup())).await;

    let bodies = fixture_bodies();
    assert_eq!(bodies.len(), 12);
    for (i, (name, body)) in bodies.iter().enumerate() {
        let http2 = i % 2 == 1;
        let reply = https(
            server.addr,
            &pki.ca_der(),
            "POST",
            "/mutate-v1-pod",
            Some("application/json"),
            body.clone(),
            http2,
        )
        .await
        .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{name}");
        assert_eq!(
            reply.alpn.as_deref(),
            Some(if http2 { &b"h2"[..] } else { &b"http/1.1"[..] })
        );
        let request: Value = serde_json::from_slice(body).unwrap();
        let response = reply.json();
        assert_eq!(response["apiVersion"], request["apiVersion"], "{name}");
        assert_eq!(response["response"]["uid"], request["request"]["uid"], "{name}");
        assert_eq!(response["response"]["allowed"], true, "{name}: {response}");
        let patch = decode_patch(&response).unwrap().expect("a patch");
        let mut pod = request["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).unwrap();
        let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
        assert!(env.iter().any(|e| e["name"] == "AZURE_FEDERATED_TOKEN_FILE"), "{name}");
        assert!(env.iter().any(|e| e["name"] == "AZURE_TENANT_ID"), "{name}");
    }
    // The legacy path answers the same.
    let reply = https(
        server.addr,
        &pki.ca_der(),
        "POST",
        "/mutate",
        Some("application/json"),
        bodies[0].1.clone(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);

    let (status, metrics) = admin_get(server.admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("wi_webhook_admission_requests_total{result=\"mutated\"} 13"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wi_webhook_admission_duration_seconds_count 13"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wi_webhook_cache_objects{kind=\"serviceaccounts\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wi_webhook_tls_certificate_expiry_timestamp_seconds "),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_service_account_is_denied_by_name() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    install_leaf(dir.path(), &pki.leaf());
    let server = start(
        serve_args(dir.path(), &[]),
        Arc::new(wi_webhook::lookup::StaticLookup::default()),
    )
    .await;
    let body = std::fs::read(fixture("admission/raw/01-plain-pod.json")).unwrap();
    let response = admit(server.addr, &pki.ca_der(), body).await.unwrap().json();
    assert_eq!(response["response"]["allowed"], false);
    assert_eq!(response["response"]["status"]["code"], 404);
    assert_eq!(
        response["response"]["status"]["message"],
        "ServiceAccount wi-fixtures/workload-sa not found"
    );
    server.stop().await.unwrap();
}

/// Opt-in is decided before the ServiceAccount is read: a pod labelled "false" in a labelled namespace is allowed
/// unchanged even when the ServiceAccount cannot be read (it once was refused), while pods that asked fail closed.
#[tokio::test]
async fn a_pod_that_opted_out_is_allowed_when_its_service_account_cannot_be_read() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    install_leaf(dir.path(), &pki.leaf());
    let server = start(serve_args(dir.path(), &[]), Arc::new(UnreachableServiceAccounts)).await;
    let review = |label: Option<&str>| {
        let mut review: Value =
            serde_json::from_slice(&std::fs::read(fixture("admission/raw/01-plain-pod.json")).unwrap()).unwrap();
        let labels = review["request"]["object"]["metadata"]["labels"]
            .as_object_mut()
            .unwrap();
        match label {
            Some(value) => labels.insert("azure.workload.identity/use".to_owned(), json!(value)),
            None => labels.remove("azure.workload.identity/use"),
        };
        serde_json::to_vec(&review).unwrap()
    };
    let opted_out = admit(server.addr, &pki.ca_der(), review(Some("false")))
        .await
        .unwrap()
        .json();
    assert_eq!(opted_out["response"]["allowed"], true, "{opted_out}");
    assert!(opted_out["response"].get("patch").is_none(), "{opted_out}");
    for asked in [Some("true"), None] {
        let refused = admit(server.addr, &pki.ca_der(), review(asked)).await.unwrap().json();
        assert_eq!(refused["response"]["allowed"], false, "{asked:?}: {refused}");
        assert_eq!(refused["response"]["status"]["code"], 500, "{asked:?}: {refused}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_specific_errors() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    install_leaf(dir.path(), &pki.leaf());
    let server = start(
        serve_args(dir.path(), &["--max-body-bytes", "65536"]),
        Arc::new(fixture_lookup()),
    )
    .await;
    let ca = pki.ca_der();
    let body = std::fs::read(fixture("admission/raw/01-plain-pod.json")).unwrap();

    let malformed = https(
        server.addr,
        &ca,
        "POST",
        "/mutate-v1-pod",
        Some("application/json"),
        b"{\"kind\": ".to_vec(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&malformed.body).starts_with("the body is not JSON"));

    let wrong_kind = https(
        server.addr,
        &ca,
        "POST",
        "/mutate-v1-pod",
        Some("application/json"),
        b"{\"kind\":\"Pod\"}".to_vec(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(wrong_kind.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&wrong_kind.body).contains("kind is \"Pod\""));

    let text = https(
        server.addr,
        &ca,
        "POST",
        "/mutate-v1-pod",
        Some("text/plain"),
        body.clone(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let none = https(server.addr, &ca, "POST", "/mutate-v1-pod", None, body.clone(), false)
        .await
        .unwrap();
    assert_eq!(none.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let mut big: Value = serde_json::from_slice(&body).unwrap();
    big["request"]["object"]["metadata"]["annotations"] = json!({"padding": "x".repeat(70_000)});
    let oversized = https(
        server.addr,
        &ca,
        "POST",
        "/mutate-v1-pod",
        Some("application/json"),
        serde_json::to_vec(&big).unwrap(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);

    let get = https(server.addr, &ca, "GET", "/mutate-v1-pod", None, vec![], false)
        .await
        .unwrap();
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    let unknown = https(
        server.addr,
        &ca,
        "POST",
        "/validate",
        Some("application/json"),
        body,
        false,
    )
    .await
    .unwrap();
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let (_, metrics) = admin_get(server.admin, "/metrics").await;
    assert!(
        metrics.contains("wi_webhook_admission_requests_total{result=\"invalid\"} 4"),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn health_and_readiness() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    install_leaf(dir.path(), &pki.leaf());
    let server = start(serve_args(dir.path(), &[]), Arc::new(fixture_lookup())).await;
    assert_eq!(
        admin_get(server.admin, "/healthz").await,
        (StatusCode::OK, "ok".to_owned())
    );
    assert_eq!(
        admin_get(server.admin, "/readyz").await,
        (StatusCode::OK, "ok".to_owned())
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_certificate_rotated_by_a_data_swap_is_served_with_no_failed_request() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let first = pki.leaf();
    install_leaf(dir.path(), &first);
    let server = start(
        serve_args(dir.path(), &["--tls-poll-interval", "10m"]),
        Arc::new(fixture_lookup()),
    )
    .await;
    let body = std::fs::read(fixture("admission/raw/01-plain-pod.json")).unwrap();

    // Clients that open a new connection (a new handshake) for every request, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, body, ca, addr) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            body.clone(),
            pki.ca_der(),
            server.addr,
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match admit(addr, &ca, body.clone()).await {
                    Ok(reply) if reply.status == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(reply) => panic!("status {}", reply.status),
                    Err(error) => {
                        eprintln!("request failed: {error}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }

    let mut served = first.der.clone();
    for rotation in 0..5 {
        let next = pki.leaf();
        install_leaf(dir.path(), &next);
        let ca = pki.ca_der();
        let switched = eventually(Duration::from_secs(10), async || {
            admit(server.addr, &ca, body.clone()).await.map(|r| r.leaf) == Ok(next.der.clone())
        })
        .await;
        assert!(
            switched,
            "rotation {rotation}: the new certificate was not served within 10 s"
        );
        assert_ne!(served, next.der);
        served = next.der.clone();
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} requests during 5 rotations, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok >= 20, "only {ok} requests ran");

    let (_, metrics) = admin_get(server.admin, "/metrics").await;
    assert!(
        metrics.contains("wi_webhook_tls_certificate_reloads_total{result=\"success\"} 5"),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_certificate_keeps_the_old_one() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let good = pki.leaf();
    install_leaf(dir.path(), &good);
    let server = start(
        serve_args(dir.path(), &["--tls-poll-interval", "200ms"]),
        Arc::new(fixture_lookup()),
    )
    .await;
    let body = std::fs::read(fixture("admission/raw/01-plain-pod.json")).unwrap();

    // The certificate of one pair with the key of another.
    let (a, b) = (pki.leaf(), pki.leaf());
    kubelet_swap(
        dir.path(),
        &[("tls.crt", a.cert_pem.as_bytes()), ("tls.key", b.key_pem.as_bytes())],
    );
    let rejected = eventually(Duration::from_secs(10), async || {
        admin_get(server.admin, "/metrics")
            .await
            .1
            .contains("wi_webhook_tls_certificate_reloads_total{result=\"failure\"}")
    })
    .await;
    assert!(rejected, "the mismatched pair was not rejected");
    let reply = admit(server.addr, &pki.ca_der(), body.clone()).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.leaf, good.der);

    // Garbage is rejected too (a second failure counted: the reload was attempted); fixing the files is picked up.
    let failures = async || {
        admin_get(server.admin, "/metrics")
            .await
            .1
            .lines()
            .find(|l| l.starts_with("wi_webhook_tls_certificate_reloads_total{result=\"failure\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = failures().await;
    kubelet_swap(dir.path(), &[("tls.crt", b"garbage"), ("tls.key", b"garbage")]);
    assert!(
        eventually(Duration::from_secs(10), async || failures().await > before).await,
        "the garbage files were never tried"
    );
    assert_eq!(
        admit(server.addr, &pki.ca_der(), body.clone()).await.unwrap().leaf,
        good.der
    );
    install_leaf(dir.path(), &a);
    let ca = pki.ca_der();
    assert!(
        eventually(Duration::from_secs(10), async || {
            admit(server.addr, &ca, body.clone()).await.map(|r| r.leaf) == Ok(a.der.clone())
        })
        .await
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_certificate_at_start_is_an_error_naming_the_file() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (pki.leaf(), pki.leaf());
    kubelet_swap(
        dir.path(),
        &[("tls.crt", a.cert_pem.as_bytes()), ("tls.key", b.key_pem.as_bytes())],
    );
    let error = wi_webhook::server::Webhook::bind(serve_args(dir.path(), &[]), Arc::new(fixture_lookup()), provider())
        .await
        .err()
        .expect("refused");
    let message = format!("{error:#}");
    assert!(
        message.contains("tls.key does not go with") && message.contains("tls.crt"),
        "{message}"
    );
}

#[tokio::test]
async fn tls_1_3_only_refuses_a_tls_1_2_client() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    install_leaf(dir.path(), &pki.leaf());
    let server = start(
        serve_args(dir.path(), &["--tls-min-version", "1.3"]),
        Arc::new(fixture_lookup()),
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let result = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::pki_types::ServerName::IpAddress(server.addr.ip().into()), tcp)
        .await;
    assert!(result.is_err(), "a TLS 1.2 handshake succeeded");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_that_takes_too_long_gets_408() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    install_leaf(dir.path(), &pki.leaf());
    let slow = SlowLookup(fixture_lookup(), Duration::from_secs(5));
    let server = start(serve_args(dir.path(), &["--request-timeout", "300ms"]), Arc::new(slow)).await;
    let body = std::fs::read(fixture("admission/raw/01-plain-pod.json")).unwrap();
    let reply = admit(server.addr, &pki.ca_der(), body).await.unwrap();
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_secret_provider_class_is_a_warning_and_the_csi_volume_is_still_injected() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    install_leaf(dir.path(), &pki.leaf());
    let server = start(serve_args(dir.path(), &[]), Arc::new(fixture_lookup())).await;
    let mut request: Value =
        serde_json::from_slice(&std::fs::read(fixture("admission/raw/01-plain-pod.json")).unwrap()).unwrap();
    request["request"]["object"]["metadata"]["annotations"] =
        json!({"workload-identity.rs/secret-provider-class": "azure-kv-spc"});
    let response = admit(server.addr, &pki.ca_der(), serde_json::to_vec(&request).unwrap())
        .await
        .unwrap()
        .json();
    assert_eq!(response["response"]["allowed"], true);
    assert_eq!(
        response["response"]["warnings"],
        json!([
            "SecretProviderClass \"azure-kv-spc\" was not found in namespace \"wi-fixtures\": the secrets volume cannot mount until it exists"
        ])
    );
    let patch = serde_json::to_string(&decode_patch(&response).unwrap().unwrap()).unwrap();
    assert!(patch.contains("secrets-store.csi.k8s.io"), "{patch}");
    server.stop().await.unwrap();
}
