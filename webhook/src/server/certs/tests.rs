//! The certificate manager against a fake API server at the HTTP layer: an in-memory store of Secrets and
//! MutatingWebhookConfigurations with resourceVersion checks, behind a real `kube::Client`. Several managers
//! sharing it are several replicas.

use super::*;
use std::convert::Infallible;
use std::sync::Mutex;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

const MWC_PATH: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/wi-webhook";
const SECRET_PATH: &str = "/api/v1/namespaces/wi-system/secrets/wi-webhook-tls";

#[derive(Default)]
struct FakeApi {
    objects: Mutex<BTreeMap<String, Value>>,
    version: Mutex<u64>,
    /// (method, path) of every write.
    writes: Mutex<Vec<(String, String)>>,
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(code: StatusCode, object: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(object).unwrap()))
        .unwrap()
}

impl FakeApi {
    fn with_webhook_configuration() -> Arc<Self> {
        let fake = Arc::new(FakeApi::default());
        let service = json!({"name": "wi-webhook", "namespace": "wi-system", "path": "/mutate-v1-pod", "port": 443});
        let webhook = |name: &str| {
            json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
                   "clientConfig": {"service": service}})
        };
        fake.objects.lock().unwrap().insert(
            MWC_PATH.to_owned(),
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                   "metadata": {"name": "wi-webhook", "resourceVersion": "1"},
                   "webhooks": [webhook("pods.workload-identity.rs"), webhook("namespaces.workload-identity.rs")]}),
        );
        fake
    }

    fn client(self: &Arc<Self>) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.handle(request).await) }
        });
        kube::Client::new(service, "wi-system")
    }

    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        let mut objects = self.objects.lock().unwrap();
        let bump = || {
            let mut v = self.version.lock().unwrap();
            *v += 1;
            (*v + 100).to_string()
        };
        match method.as_str() {
            "GET" => match objects.get(&path) {
                Some(object) => ok(StatusCode::OK, object),
                None => status(404, "NotFound", "not found"),
            },
            "POST" => {
                let mut object: Value = serde_json::from_slice(&bytes).unwrap();
                let key = format!("{path}/{}", object["metadata"]["name"].as_str().unwrap());
                if objects.contains_key(&key) {
                    return status(409, "AlreadyExists", "already exists");
                }
                object["metadata"]["resourceVersion"] = json!(bump());
                objects.insert(key.clone(), object.clone());
                self.writes.lock().unwrap().push((method, key));
                ok(StatusCode::CREATED, &object)
            }
            "PUT" => {
                let mut object: Value = serde_json::from_slice(&bytes).unwrap();
                let Some(stored) = objects.get(&path) else {
                    return status(404, "NotFound", "not found");
                };
                if object["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                    return status(409, "Conflict", "the object has been modified");
                }
                object["metadata"]["resourceVersion"] = json!(bump());
                objects.insert(path.clone(), object.clone());
                self.writes.lock().unwrap().push((method, path));
                ok(StatusCode::OK, &object)
            }
            _ => status(405, "MethodNotAllowed", "unexpected method"),
        }
    }

    fn ca_bundles(&self) -> Vec<Vec<u8>> {
        let objects = self.objects.lock().unwrap();
        objects[MWC_PATH]["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                base64::engine::general_purpose::STANDARD
                    .decode(w["clientConfig"]["caBundle"].as_str().unwrap_or_default())
                    .unwrap()
            })
            .collect()
    }

    fn secret_writes(&self) -> usize {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p)| p == SECRET_PATH)
            .count()
    }
}

fn args(settle: &str, ca_lifetime: &str, cert_lifetime: &str) -> CertConfig {
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: CertConfig,
    }
    <Wrapper as clap::Parser>::try_parse_from([
        "x",
        "--cert-mode",
        "self-managed",
        "--ca-rollover-settle",
        settle,
        "--ca-lifetime",
        ca_lifetime,
        "--cert-lifetime",
        cert_lifetime,
    ])
    .unwrap()
    .args
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const NAME: &str = "wi-webhook.wi-system.svc";

#[tokio::test]
async fn first_start_creates_the_secret_and_the_ca_bundle_and_a_second_replica_reuses_them() {
    let fake = FakeApi::with_webhook_configuration();
    let first = CertManager::new(fake.client(), args("10m", "5y", "365d"));
    let store = first.initial(provider()).await.unwrap();
    assert!(first.trusted_flag().load(Ordering::Acquire));
    assert_eq!(fake.secret_writes(), 1);
    let bundles = fake.ca_bundles();
    assert_eq!(bundles.len(), 2);
    assert_eq!(bundles[0], bundles[1]);
    let roots = parse_bundle(&bundles[0]);
    assert_eq!(roots.len(), 1);
    for name in ["wi-webhook.wi-system.svc", "wi-webhook.wi-system.svc.cluster.local"] {
        assert!(verifies(&store.leaf(), &roots, name, unix_now()), "{name}");
    }
    assert!(!verifies(&store.leaf(), &roots, "other.wi-system.svc", unix_now()));

    let second = CertManager::new(fake.client(), args("10m", "5y", "365d"));
    let second_store = second.initial(provider()).await.unwrap();
    assert_eq!(
        second_store.leaf(),
        store.leaf(),
        "the second replica serves the same certificate"
    );
    assert_eq!(fake.secret_writes(), 1, "the second replica wrote nothing");
    let again = second.reconcile(&second_store, unix_now()).await.unwrap();
    assert_eq!(
        again,
        Reconciled {
            reloaded: None,
            wrote_secret: false,
            patched_ca_bundle: false,
            trusted: true
        }
    );
}

#[tokio::test]
async fn replicas_racing_at_first_start_end_up_with_one_certificate() {
    let fake = FakeApi::with_webhook_configuration();
    let managers: Vec<CertManager> = (0..4)
        .map(|_| CertManager::new(fake.client(), args("10m", "5y", "365d")))
        .collect();
    let stores = futures::future::join_all(managers.iter().map(|m| m.initial(provider()))).await;
    let leaves: Vec<_> = stores.into_iter().map(|s| s.unwrap().leaf()).collect();
    assert!(
        leaves.windows(2).all(|w| w[0] == w[1]),
        "replicas serve different certificates"
    );
    assert_eq!(fake.secret_writes(), 1);
}

#[tokio::test]
async fn a_missing_webhook_configuration_leaves_the_replica_unready() {
    let fake = Arc::new(FakeApi::default());
    let manager = CertManager::new(fake.client(), args("10m", "5y", "365d"));
    let store = manager.initial(provider()).await.unwrap();
    assert!(!manager.trusted_flag().load(Ordering::Acquire));
    let done = manager.reconcile(&store, unix_now()).await.unwrap();
    assert!(!done.trusted);
}

/// Two replicas through a whole CA lifetime and more, one reconcile each every step. Between any two steps, what
/// each replica serves is trusted by the caBundle the API server had before and after the step: no outage.
#[tokio::test]
async fn rotation_and_ca_rollover_never_serve_an_untrusted_certificate() {
    let fake = FakeApi::with_webhook_configuration();
    // CA: 3000 s (rolled at 1000 s left); certificates: 900 s (renewed at 300 s left); settle: 120 s.
    let replicas: Vec<CertManager> = (0..2)
        .map(|_| CertManager::new(fake.client(), args("120s", "3000s", "900s")))
        .collect();
    let start = unix_now();
    let mut stores = Vec::new();
    for replica in &replicas {
        stores.push(replica.initial(provider()).await.unwrap());
    }
    let first_ca = parse_bundle(&fake.ca_bundles()[0]);
    let mut leaves_seen = std::collections::BTreeSet::new();
    let mut max_cas = 1;
    let mut previous_bundle = fake.ca_bundles()[0].clone();
    for step in 1..=120 {
        let now = start + step * 60;
        for (replica, store) in replicas.iter().zip(&stores) {
            let served_before = store.leaf();
            replica.reconcile(store, now).await.unwrap();
            let bundle = fake.ca_bundles()[0].clone();
            for (label, roots) in [("before", &previous_bundle), ("after", &bundle)] {
                for other in &stores {
                    assert!(
                        verifies(&other.leaf(), &parse_bundle(roots), NAME, now),
                        "step {step}: a served certificate is not trusted by the caBundle {label}"
                    );
                }
            }
            assert!(verifies(&served_before, &parse_bundle(&bundle), NAME, now));
            max_cas = max_cas.max(parse_bundle(&bundle).len());
            previous_bundle = bundle;
            leaves_seen.insert(store.leaf().to_vec());
        }
    }
    // Two hours: the CA (3000 s) rolled over at least once, certificates (900 s) were renewed many times.
    let final_cas = parse_bundle(&fake.ca_bundles()[0]);
    assert!(
        !final_cas.iter().any(|ca| first_ca.contains(ca)),
        "the first CA was never rolled out"
    );
    assert_eq!(max_cas, 2, "the rollover never trusted two CAs at once");
    assert!(
        leaves_seen.len() >= 8,
        "only {} certificates were served",
        leaves_seen.len()
    );
}

#[test]
fn plan_keeps_a_good_bundle_and_replaces_an_expired_ca() {
    let policy = Policy {
        dns_names: vec![NAME.to_owned()],
        ca_lifetime: Duration::from_secs(3000),
        cert_lifetime: Duration::from_secs(900),
        settle: Duration::from_secs(120),
    };
    let now = unix_now();
    let bundle = plan(None, &[], &policy, now).unwrap().unwrap();
    assert!(plan(Some(&bundle), &[], &policy, now + 10).unwrap().is_none());
    let later = plan(Some(&bundle), &[], &policy, now + 5000).unwrap().unwrap();
    assert_ne!(later.signing, bundle.signing);
    assert!(later.next.is_none() && later.previous.is_none());

    // The next CA is not promoted while the webhook configuration does not trust it.
    let rolling = plan(Some(&bundle), &[], &policy, now + 2100).unwrap().unwrap();
    assert!(rolling.next.is_some());
    let waiting = plan(Some(&rolling), &[], &policy, now + 2500).unwrap();
    assert!(
        waiting.as_ref().is_none_or(|b| b.signing == rolling.signing),
        "promoted without trust"
    );
    let trusts = parse_bundle(rolling.ca_bundle_pem().as_bytes());
    let promoted = plan(Some(&rolling), &trusts, &policy, now + 2500).unwrap().unwrap();
    assert_eq!(Some(&promoted.signing), rolling.next.as_ref());
    assert_eq!(promoted.previous.as_ref(), Some(&rolling.signing.cert));
}

#[test]
fn secret_round_trip() {
    let policy = Policy {
        dns_names: vec![NAME.to_owned()],
        ca_lifetime: Duration::from_secs(3000),
        cert_lifetime: Duration::from_secs(900),
        settle: Duration::from_secs(120),
    };
    let bundle = plan(None, &[], &policy, unix_now()).unwrap().unwrap();
    let data = bundle.to_secret_data();
    assert_eq!(Bundle::from_secret(&data).unwrap(), bundle);
    let mut broken = data.clone();
    broken.remove(CA_KEY);
    assert!(
        Bundle::from_secret(&broken)
            .unwrap_err()
            .to_string()
            .contains("ca-signing.key")
    );
}

/// A 4-minute certificate is renewed 160 s after it was made and a 6-minute CA gets its successor after 240 s: the
/// lifetime counts from issuance, not from the `notBefore` backdated by 300 s (which renewed them after 60 s and
/// 140 s, and a certificate of 150 s or less at every check).
#[test]
fn lifetimes_count_from_issuance_not_from_the_backdated_not_before() {
    let policy = Policy {
        dns_names: vec![NAME.to_owned()],
        ca_lifetime: Duration::from_secs(360),
        cert_lifetime: Duration::from_secs(240),
        settle: Duration::from_secs(40),
    };
    let now = unix_now();
    let bundle = plan(None, &[], &policy, now).unwrap().unwrap();
    assert!(
        plan(Some(&bundle), &[], &policy, now + 155).unwrap().is_none(),
        "nothing is due 155 s after issuance"
    );
    let renewed = plan(Some(&bundle), &[], &policy, now + 165).unwrap().unwrap();
    assert_ne!(
        renewed.leaf, bundle.leaf,
        "the certificate is due with less than 80 s left"
    );
    assert!(renewed.next.is_none(), "the CA is not due before 240 s");
    let rolling = plan(Some(&renewed), &[], &policy, now + 245).unwrap().unwrap();
    assert!(
        rolling.next.is_some(),
        "the CA gets its successor with less than 120 s left"
    );

    let short = Policy {
        cert_lifetime: Duration::from_secs(120),
        ca_lifetime: Duration::from_secs(3600),
        ..policy
    };
    let bundle = plan(None, &[], &short, now).unwrap().unwrap();
    for after in [5, 30, 75] {
        assert!(
            plan(Some(&bundle), &[], &short, now + after).unwrap().is_none(),
            "a 120 s certificate is not due {after} s after issuance"
        );
    }
    assert!(plan(Some(&bundle), &[], &short, now + 85).unwrap().is_some());
}

/// Self-managed renewals count in `wi_webhook_tls_certificate_reloads_total`, as file reloads do.
#[tokio::test]
async fn a_certificate_changed_in_the_secret_counts_as_a_reload() {
    let fake = FakeApi::with_webhook_configuration();
    let mut settings = args("10m", "5y", "365d");
    settings.cert_check_interval = Duration::from_millis(50);
    let manager = Arc::new(CertManager::new(fake.client(), settings));
    let store = manager.initial(provider()).await.unwrap();
    let first = store.leaf();
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let task = tokio::spawn(manager.clone().run(store.clone(), metrics.clone()));
    // The Secret is deleted (or replaced by another replica): the next check writes and serves a new certificate.
    fake.objects.lock().unwrap().remove(SECRET_PATH);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let counted = "wi_webhook_tls_certificate_reloads_total{result=\"success\"} 1\n";
    while !metrics.encode().contains(counted) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload counted in 10 s:\n{}",
            metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    assert_ne!(store.leaf(), first, "the new certificate is served");
}

#[rstest::rstest]
#[case(&[], Ok(()))]
#[case(&["--ca-rollover-settle", "40s", "--cert-check-interval", "5s", "--ca-lifetime", "6m", "--cert-lifetime", "4m"], Ok(()))]
#[case(&["--ca-rollover-settle", "5s", "--cert-check-interval", "10s"], Err("--ca-rollover-settle (5s) must be at least --cert-check-interval (10s)"))]
#[case(&["--cert-lifetime", "2m", "--cert-check-interval", "1m"], Err("--cert-lifetime (2m) must be at least three times --cert-check-interval (1m)"))]
#[case(&["--ca-lifetime", "30m", "--ca-rollover-settle", "10m", "--cert-check-interval", "1m"], Err("--ca-lifetime (30m) must be at least three times --ca-rollover-settle plus --cert-check-interval (11m)"))]
fn settings_that_would_break_trust_are_refused(#[case] flags: &[&str], #[case] expected: Result<(), &str>) {
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: CertConfig,
    }
    let argv = ["x", "--cert-mode", "self-managed"].iter().chain(flags);
    let settings = <Wrapper as clap::Parser>::try_parse_from(argv).unwrap().args;
    match (settings.check(), expected) {
        (Ok(()), Ok(())) => {}
        (Err(message), Err(part)) => assert!(message.contains(part), "{message}"),
        (got, want) => panic!("{flags:?}: {got:?}, expected {want:?}"),
    }
}
