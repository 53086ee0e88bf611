//! `wi-sidecar`'s fetch against the emulator: a SecretProviderClass's secrets become file contents with one token
//! for all of them, all or nothing, and errors name the object.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use wi_sdk::identity::{CloudOptions, client_options};
use wi_sidecar::atomic_writer::AtomicWriter;
use wi_sidecar::fetch::{Fetcher, SyncError};
use wi_testbed::Emulator;

const TENANT: &str = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f";
const VAULT: &str = "kv-techventure-001";

fn class(objects: &str) -> wi_sidecar::config::SyncConfig {
    let indented: String = objects.lines().map(|l| format!("      {l}\n")).collect();
    wi_sidecar::config::parse(&format!(
        "keyvaultName: {VAULT}\ntenantId: {TENANT}\nobjects: |\n  array:\n{indented}"
    ))
    .unwrap()
}

/// A fetcher as the sidecar builds it, with the token file in a directory that lives as long as the test.
async fn fetcher(
    emulator: &Emulator,
    vault_url: &str,
    config: wi_sidecar::config::SyncConfig,
) -> (Fetcher, tempfile::TempDir) {
    let identity = emulator.add_workload_identity("mi-sidecar", TENANT, "default", "my-app-sa");
    emulator.grant(VAULT, &identity.principal_id, &["get", "list"]);
    let dir = tempfile::tempdir().unwrap();
    let env = emulator
        .workload_env(&identity, "default", "my-app-sa", &dir.path().join("token"))
        .unwrap();
    let cloud = CloudOptions {
        authority_host: Some(emulator.authority_host().to_owned()),
        extra_ca_file: Some(emulator.ca_file().to_owned()),
    };
    let credential = wi_sdk::identity::from_vars_with(
        |name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()),
        &cloud,
    )
    .unwrap();
    let mut options = client_options(&cloud).unwrap();
    options.retry = azure_core::http::RetryOptions::none();
    (
        Fetcher::new(config, vault_url, credential, options, false, 4).unwrap(),
        dir,
    )
}

#[tokio::test]
async fn secrets_become_files_with_one_token() {
    let emulator = Emulator::start().await.unwrap();
    let url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    emulator
        .set_secret(VAULT, "MyWebAppSecret", "SuperSecureValue123!", None)
        .unwrap();
    let raw = [0u8, 159, 146, 150, 255];
    emulator
        .set_secret(
            VAULT,
            "blob",
            &base64::engine::general_purpose::STANDARD.encode(raw),
            None,
        )
        .unwrap();
    emulator.set_secret(VAULT, "hexed", "00ff10", None).unwrap();
    emulator
        .set_certificate_secret(
            VAULT,
            "web-cert",
            "-----BEGIN PRIVATE KEY-----\nk\n-----END PRIVATE KEY-----\n",
            "application/x-pem-file",
        )
        .unwrap();
    let config = class(
        "- |\n  objectName: MyWebAppSecret\n  objectType: secret\n\
         - |\n  objectName: blob\n  objectType: secret\n  objectEncoding: base64\n  objectAlias: bin/blob\n  filePermission: \"0600\"\n\
         - |\n  objectName: hexed\n  objectType: secret\n  objectEncoding: hex\n\
         - |\n  objectName: web-cert\n  objectType: secret\n  objectAlias: tls.pem",
    );
    let (fetcher, _token) = fetcher(&emulator, &url, config).await;
    let files = fetcher.fetch_all().await.unwrap();
    assert_eq!(files["MyWebAppSecret"].data, b"SuperSecureValue123!");
    assert_eq!(files["bin/blob"].data, raw);
    assert_eq!(files["bin/blob"].mode, 0o600);
    assert_eq!(files["hexed"].data, [0, 255, 16]);
    assert!(files["tls.pem"].data.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    let counters = emulator.counters();
    assert_eq!(
        counters.get("token"),
        Some(&1),
        "one token for four objects: {counters:?}"
    );
    assert_eq!(counters.get(&format!("{VAULT} get-secret")), Some(&4));

    // And they are written the way kubelet writes a volume.
    let out = tempfile::tempdir().unwrap();
    AtomicWriter::new(out.path()).write(&files).unwrap();
    assert_eq!(std::fs::read(out.path().join("bin/blob")).unwrap(), raw);
}

/// Keys, certificates and certificate-backed secrets in every format, byte for byte as the CSI driver's Azure
/// provider writes them, compared with the material the emulator generated.
#[tokio::test]
async fn every_object_type_is_written_as_the_csi_provider_writes_it() {
    use wi_testbed::emulator::{CertificateFormat, KeyKind};
    let emulator = Emulator::start().await.unwrap();
    let url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    let rsa = emulator.create_key(VAULT, "signing-rsa", KeyKind::Rsa2048).unwrap();
    let ec = emulator.create_key(VAULT, "signing-ec", KeyKind::EcP256).unwrap();
    let pfx_cert = emulator
        .create_certificate(VAULT, "web", "web.example", CertificateFormat::Pkcs12)
        .unwrap();
    let pem_cert = emulator
        .create_certificate(VAULT, "api", "api.example", CertificateFormat::Pem)
        .unwrap();
    let config = class(
        "- |\n  objectName: signing-rsa\n  objectType: key\n\
         - |\n  objectName: signing-ec\n  objectType: key\n\
         - |\n  objectName: web\n  objectType: cert\n  objectAlias: web.crt\n\
         - |\n  objectName: web\n  objectType: secret\n  objectAlias: web.pem\n\
         - |\n  objectName: web\n  objectType: secret\n  objectFormat: pfx\n  objectAlias: web.pfx.b64\n\
         - |\n  objectName: web\n  objectType: secret\n  objectFormat: pfx\n  objectEncoding: base64\n  objectAlias: web.pfx\n\
         - |\n  objectName: api\n  objectType: secret\n  objectAlias: api.pem",
    );
    let (fetcher, _token) = fetcher(&emulator, &url, config).await;
    let files = fetcher.fetch_all().await.unwrap();
    let text = |name: &str| String::from_utf8(files[name].data.clone()).unwrap();
    assert_eq!(text("signing-rsa"), rsa.public_key_pem);
    assert_eq!(text("signing-ec"), ec.public_key_pem);
    assert_eq!(text("web.crt"), pfx_cert.leaf_pem, "cert: the leaf only");
    assert_eq!(
        text("web.pem"),
        format!("{}{}{}", pfx_cert.key_pem, pfx_cert.leaf_pem, pfx_cert.ca_pem),
        "PKCS#12 to PEM: the PKCS#8 key, then the chain leaf to root"
    );
    // The provider's pfx: Key Vault's base64 text, the PFX bytes with objectEncoding base64.
    assert_eq!(
        files["web.pfx.b64"].data,
        base64::engine::general_purpose::STANDARD
            .encode(&pfx_cert.pfx)
            .into_bytes()
    );
    assert_eq!(files["web.pfx"].data, pfx_cert.pfx);
    assert_eq!(
        text("api.pem"),
        format!("{}{}{}", pem_cert.key_pem, pem_cert.leaf_pem, pem_cert.ca_pem),
        "a PEM certificate secret as stored"
    );
    let counters = emulator.counters();
    assert_eq!(counters.get("token"), Some(&1), "{counters:?}");
    assert_eq!(counters.get(&format!("{VAULT} get-key")), Some(&2), "{counters:?}");
    assert_eq!(
        counters.get(&format!("{VAULT} get-certificate")),
        Some(&1),
        "{counters:?}"
    );
    assert_eq!(counters.get(&format!("{VAULT} get-secret")), Some(&4), "{counters:?}");
}

/// `objectVersionHistory: 3`: a directory of the three newest enabled versions, `0` the newest; from a given
/// `objectVersion` on, older ones follow it.
#[tokio::test]
async fn version_history_writes_a_directory_of_the_newest_enabled_versions() {
    let emulator = Emulator::start().await.unwrap();
    let url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    let mut versions = Vec::new();
    for i in 1..=4 {
        versions.push(
            emulator
                .set_secret(VAULT, "db", &format!("password-{i}"), None)
                .unwrap(),
        );
    }
    let config = class(&format!(
        "- |\n  objectName: db\n  objectType: secret\n  objectVersionHistory: 3\n\
         - |\n  objectName: db\n  objectType: secret\n  objectAlias: pinned\n  objectVersion: {}\n  objectVersionHistory: 5",
        versions[1]
    ));
    let (fetcher, _token) = fetcher(&emulator, &url, config).await;
    let files = fetcher.fetch_all().await.unwrap();
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["db/0", "db/1", "db/2", "pinned/0", "pinned/1"]);
    assert_eq!(files["db/0"].data, b"password-4");
    assert_eq!(files["db/2"].data, b"password-2");
    assert_eq!(files["pinned/0"].data, b"password-2");
    assert_eq!(files["pinned/1"].data, b"password-1");
    let out = tempfile::tempdir().unwrap();
    AtomicWriter::new(out.path()).write(&files).unwrap();
    assert_eq!(std::fs::read(out.path().join("db/1")).unwrap(), b"password-3");
}

#[tokio::test]
async fn one_missing_object_fails_the_whole_sync_and_is_named() {
    let emulator = Emulator::start().await.unwrap();
    let url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    emulator.set_secret(VAULT, "present", "v", None).unwrap();
    let config = class(
        "- |\n  objectName: present\n  objectType: secret\n\
         - |\n  objectName: absent\n  objectType: secret",
    );
    let (fetcher, _token) = fetcher(&emulator, &url, config).await;
    let error = fetcher.fetch_all().await.unwrap_err();
    assert_eq!(error.to_string(), "secret absent: not found in the vault");
    assert!(matches!(error, SyncError::Object { status: Some(404), .. }));
}

#[tokio::test]
async fn throttling_is_reported_with_its_retry_after_and_without_values() {
    let emulator = Emulator::start().await.unwrap();
    let url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    emulator.set_secret(VAULT, "s", "hunter2", None).unwrap();
    emulator.set_fault(
        wi_testbed::emulator::FaultTarget::Vault(VAULT.to_owned()),
        Some(wi_testbed::emulator::Fault {
            status: Some(429),
            retry_after: Some(7),
            ..Default::default()
        }),
    );
    let (fetcher, _token) = fetcher(&emulator, &url, class("- |\n  objectName: s\n  objectType: secret")).await;
    let error = fetcher.fetch_all().await.unwrap_err();
    assert_eq!(error.retry_after(), Some(7), "{error}");
    assert!(error.to_string().contains("throttled"), "{error}");
    assert!(!format!("{error:?}").contains("hunter2"));
}

/// The loop: a new version shows up within an interval; with Key Vault down the files stay, failures are counted
/// and backed off; when it is back, the files catch up without a restart. A 429's Retry-After delays the retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_rotates_survives_an_outage_and_honours_retry_after() {
    use wi_sidecar::run::{Schedule, Syncer};
    use wi_testbed::emulator::{Fault, FaultTarget};

    let emulator = Emulator::start().await.unwrap();
    let url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    emulator.set_secret(VAULT, "password", "v1", None).unwrap();
    let (fetcher, _token) = fetcher(
        &emulator,
        &url,
        class("- |\n  objectName: password\n  objectType: secret"),
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let syncer = Arc::new(Syncer::new(fetcher, AtomicWriter::new(out.path())));
    let metrics = syncer.metrics();
    let schedule = Schedule {
        interval: Duration::from_millis(200),
        jitter: 0.1,
        backoff_base: Duration::from_millis(50),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let syncer = syncer.clone();
        tokio::spawn(async move {
            syncer
                .run(schedule, async {
                    let _ = stopped.await;
                })
                .await
        })
    };
    let file = out.path().join("password");
    let wait_for = |want: &'static str| {
        let file = file.clone();
        async move {
            for _ in 0..100 {
                if std::fs::read_to_string(&file).is_ok_and(|v| v == want) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    };
    assert!(wait_for("v1").await, "first sync");
    let mut ready = false;
    for _ in 0..50 {
        if syncer.ready().load(std::sync::atomic::Ordering::Acquire) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready, "ready after the first complete sync");
    emulator.set_secret(VAULT, "password", "v2", None).unwrap();
    assert!(wait_for("v2").await, "the new version within an interval");

    // Key Vault down: several intervals pass, the file stays, failures are counted.
    emulator.set_fault(
        FaultTarget::Vault(VAULT.to_owned()),
        Some(Fault {
            status: Some(503),
            ..Fault::default()
        }),
    );
    emulator.set_secret(VAULT, "password", "v3", None).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "v2");
    let text = metrics.encode();
    assert!(text.contains("wi_sidecar_syncs_total{result=\"failed\"}"), "{text}");
    assert!(!text.contains("wi_sidecar_consecutive_failures 0"), "{text}");

    // Back: recovery without a restart.
    emulator.set_fault(FaultTarget::Vault(VAULT.to_owned()), None);
    assert!(wait_for("v3").await, "recovery");
    // The metrics are updated just after the write that the file shows.
    let mut reset = false;
    for _ in 0..50 {
        if metrics.encode().contains("wi_sidecar_consecutive_failures 0") {
            reset = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reset, "{}", metrics.encode());

    // A 429 asking for 1 s: no retry before it.
    let before = emulator
        .counters()
        .get(&format!("{VAULT} get-secret"))
        .copied()
        .unwrap_or(0);
    emulator.set_fault(
        FaultTarget::Vault(VAULT.to_owned()),
        Some(Fault {
            status: Some(429),
            retry_after: Some(1),
            times: Some(1),
            ..Fault::default()
        }),
    );
    emulator.set_secret(VAULT, "password", "v4", None).unwrap();
    let started = std::time::Instant::now();
    assert!(wait_for("v4").await);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "retried after {elapsed:?}, before the 1 s Retry-After"
    );
    let after = emulator
        .counters()
        .get(&format!("{VAULT} get-secret"))
        .copied()
        .unwrap_or(0);
    assert!(
        after - before <= 2,
        "{} reads during the Retry-After window",
        after - before
    );

    let _ = stop.send(());
    task.await.unwrap();
}

/// 1,000 rotations through the sidecar (fetch from Key Vault, atomic write) while readers hammer the directory: an
/// SDK snapshot reader never sees two generations at once, a plain reader of one file never sees a partial file,
/// and the SDK's watcher (inotify) ends on the last generation without ever delivering a mixed snapshot.
///
/// A plain reader opening `NAME -> ..data/NAME` can, rarely, find no file: it resolved `..data` to the old version's
/// directory just as the writer removed it. Kubelet's writer has the same window; such a read is counted and
/// retried, as an app would (wi-sdk never sees it: it reads every file through one resolved `..data`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_mix_or_a_partial_file_during_1000_rotations() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use wi_sidecar::run::Syncer;

    const ROTATIONS: usize = 1000;
    const NAMES: [&str; 3] = ["db-password", "api-key", "tls-bundle"];
    // Large enough that a torn write would show: 8 KiB per value.
    let value = |generation: usize, name: &str| format!("{name}:{generation:06}:{}:end", "x".repeat(8 * 1024));
    let parse = |bytes: &[u8], name: &str| -> Option<usize> {
        let text = std::str::from_utf8(bytes).ok()?;
        let rest = text.strip_prefix(name)?.strip_prefix(':')?;
        let (generation, body) = rest.split_once(':')?;
        let generation: usize = generation.parse().ok()?;
        (body == format!("{}:end", "x".repeat(8 * 1024))).then_some(generation)
    };

    let emulator = Emulator::start().await.unwrap();
    let url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    for name in NAMES {
        emulator.set_secret(VAULT, name, &value(0, name), None).unwrap();
    }
    let objects: String = NAMES
        .iter()
        .map(|n| format!("- |\n  objectName: {n}\n  objectType: secret\n"))
        .collect();
    let (fetcher, _token) = fetcher(&emulator, &url, class(&objects)).await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_owned();
    let syncer = Syncer::new(fetcher, AtomicWriter::new(&dir));
    syncer.sync_once().await.unwrap();
    let watcher = wi_sdk::SecretsDir::watch(&dir).unwrap();
    let mut updates = watcher.subscribe();

    let stop = Arc::new(AtomicBool::new(false));
    let (snapshots, mixed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (file_reads, partial) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let vanished = Arc::new(AtomicU64::new(0));
    let snapshot_reader = {
        let (stop, snapshots, mixed, dir) = (stop.clone(), snapshots.clone(), mixed.clone(), dir.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let snapshot = wi_sdk::snapshot::read(&dir).unwrap();
                let generations: Vec<Option<usize>> = NAMES
                    .iter()
                    .map(|n| snapshot.get(n).and_then(|b| parse(b, n)))
                    .collect();
                if generations.iter().any(Option::is_none) || generations.windows(2).any(|w| w[0] != w[1]) {
                    mixed.fetch_add(1, Ordering::Relaxed);
                }
                snapshots.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let file_reader = {
        let (stop, file_reads, partial, dir) = (stop.clone(), file_reads.clone(), partial.clone(), dir.clone());
        let vanished = vanished.clone();
        std::thread::spawn(move || {
            let path = dir.join(NAMES[2]);
            while !stop.load(Ordering::Acquire) {
                // Through the user-visible symlink, as an app that opens one file does.
                let bytes = match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        vanished.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(error) => panic!("{}: {error}", path.display()),
                };
                if parse(&bytes, NAMES[2]).is_none() {
                    partial.fetch_add(1, Ordering::Relaxed);
                }
                file_reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let started = std::time::Instant::now();
    let mut watched_mixed = 0;
    for generation in 1..=ROTATIONS {
        for name in NAMES {
            emulator
                .set_secret(VAULT, name, &value(generation, name), None)
                .unwrap();
        }
        let written = syncer.sync_once().await.unwrap();
        assert!(
            matches!(written, wi_sidecar::atomic_writer::Written::Committed(_)),
            "{written:?}"
        );
        if updates.has_changed().unwrap_or(false) {
            let snapshot = updates.borrow_and_update().clone();
            let generations: Vec<Option<usize>> = NAMES
                .iter()
                .map(|n| snapshot.get(n).and_then(|b| parse(b, n)))
                .collect();
            if generations.iter().any(Option::is_none) || generations.windows(2).any(|w| w[0] != w[1]) {
                watched_mixed += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Release);
    snapshot_reader.join().unwrap();
    file_reader.join().unwrap();

    let last = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let snapshot = watcher.current();
            if snapshot.get(NAMES[0]).and_then(|b| parse(b, NAMES[0])) == Some(ROTATIONS) {
                return snapshot;
            }
            let _ = updates.changed().await;
        }
    })
    .await
    .expect("the watcher reaches the last generation");
    for name in NAMES {
        assert_eq!(last.get(name).and_then(|b| parse(b, name)), Some(ROTATIONS), "{name}");
    }
    let (snapshots, file_reads) = (snapshots.load(Ordering::Relaxed), file_reads.load(Ordering::Relaxed));
    let vanished = vanished.load(Ordering::Relaxed);
    println!(
        "{ROTATIONS} rotations in {elapsed:?}: {snapshots} snapshot reads, {file_reads} single-file reads \
         ({vanished} found no file mid-swap and were retried), watcher generation {}",
        watcher.generation()
    );
    assert_eq!(
        mixed.load(Ordering::Relaxed),
        0,
        "mixed or torn snapshots out of {snapshots}"
    );
    assert_eq!(partial.load(Ordering::Relaxed), 0, "partial files out of {file_reads}");
    assert_eq!(watched_mixed, 0, "mixed snapshots delivered by the watcher");
    assert!(
        snapshots > 100 && file_reads > 100,
        "the readers ran: {snapshots} {file_reads}"
    );
    let counters = emulator.counters();
    assert_eq!(
        counters.get("token"),
        Some(&1),
        "one token for all rotations: {counters:?}"
    );
    assert_eq!(
        counters.get(&format!("{VAULT} get-secret")),
        Some(&(3 * (ROTATIONS as u64 + 1))),
        "one GET per object per sync"
    );
    // No version directory is left behind: only the current one.
    let versions = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("..") && name != "..data"
        })
        .count();
    assert_eq!(versions, 1);
}

/// A pinned version cannot change in Key Vault: it is fetched by the first sync only; the latest is checked each
/// time.
#[tokio::test]
async fn a_pinned_version_is_fetched_once() {
    let emulator = Emulator::start().await.unwrap();
    let url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    let v1 = emulator.set_secret(VAULT, "cert", "pinned-1", None).unwrap();
    emulator.set_secret(VAULT, "cert", "newer-2", None).unwrap();
    let config = class(&format!(
        "- |\n  objectName: cert\n  objectType: secret\n  objectVersion: {v1}\n  objectAlias: pinned\n\
         - |\n  objectName: cert\n  objectType: secret\n  objectAlias: latest"
    ));
    let (fetcher, _token) = fetcher(&emulator, &url, config).await;
    for _ in 0..3 {
        let files = fetcher.fetch_all().await.unwrap();
        assert_eq!(files["pinned"].data, b"pinned-1");
        assert_eq!(files["latest"].data, b"newer-2");
    }
    assert_eq!(
        emulator.counters().get(&format!("{VAULT} get-secret")),
        Some(&4),
        "1 + 3"
    );
}
