//! `wi-sidecar run` under faults (issue 30), as a process against the emulator, its directory read meanwhile by
//! wi-sdk's snapshot reader in another thread, as an app reads it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::binary::{Pod, VAULT, http_get, pod};

const OBJECTS: [&str; 3] = ["alpha", "bravo", "charlie"];

/// The value of every object at version `n`: 20 KB (Key Vault takes 25 KB), so that a write takes long enough for a
/// kill to land inside it; the version at the start and the end, so a torn file shows.
fn value(n: u64) -> String {
    format!("v{n:06}:{}:v{n:06}", "x".repeat(20_000))
}

/// The version of a complete value, `None` for anything else (torn, empty, foreign).
fn version_of(content: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(content).ok()?;
    let n: u64 = text.get(1..7)?.parse().ok()?;
    (text == value(n)).then_some(n)
}

/// The version every file of `secrets` shows, when they agree.
fn current_version(secrets: &std::path::Path) -> Option<u64> {
    let snapshot = wi_sdk::snapshot::read(secrets).ok()?;
    let versions: Vec<Option<u64>> = OBJECTS.iter().map(|o| snapshot.get(o).and_then(version_of)).collect();
    versions
        .windows(2)
        .all(|w| w[0] == w[1])
        .then_some(versions[0])
        .flatten()
}

/// An address on 127.0.0.1 with a free port, for `--admin-listen`.
fn free_admin() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// A small deterministic generator (xorshift), seeded from the clock and printed, for kill delays.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Default)]
struct Reads {
    total: AtomicU64,
    torn: AtomicU64,
    mixed: AtomicU64,
    incomplete: AtomicU64,
    errors: AtomicU64,
}

impl Pod {
    fn start(&self, admin: &str) -> tokio::process::Child {
        self.command(
            &["run", "--admin-listen", admin, "--interval", "20ms", "--jitter", "0"],
            &OBJECTS,
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
    }

    fn set_version(&self, n: u64) {
        for object in OBJECTS {
            self.emulator.set_secret(VAULT, object, &value(n), None).unwrap();
        }
    }
}

/// 500 rotations of three 20 KB secrets; at about half of them `kill -9` lands at a random point 0-40 ms after the
/// new version is in Key Vault (while fetching, writing or swapping), and the sidecar is started again. An
/// independent reader (wi-sdk's snapshot, as apps read) checks every read against the complete versions: no torn
/// file, no mix of two versions, never a missing file once the first version is there. Each version is reached after
/// the restarts, and at the end the directory holds one version, with no `..data_tmp` or orphaned version left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_of_500_rotations_never_shows_a_reader_a_torn_or_mixed_version() {
    const ROTATIONS: u64 = 500;
    let pod = pod().await;
    pod.set_version(0);
    let admin = free_admin();
    let secrets = pod.dir.path().join("secrets");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut random = Random(seed);

    // The reader: from the first complete version on, every read must be one complete version.
    let reads = Arc::new(Reads::default());
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (reads, stop, secrets) = (reads.clone(), stop.clone(), secrets.clone());
        std::thread::spawn(move || {
            let mut started = false;
            while !stop.load(Ordering::Relaxed) {
                let snapshot = match wi_sdk::snapshot::read(&secrets) {
                    Ok(snapshot) if snapshot.version().is_some() => snapshot,
                    // Before the first write there is no directory, or no ..data.
                    _ if !started => continue,
                    _ => {
                        reads.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                started = true;
                reads.total.fetch_add(1, Ordering::Relaxed);
                let versions: Vec<Option<u64>> = OBJECTS.iter().map(|o| snapshot.get(o).and_then(version_of)).collect();
                if OBJECTS.iter().any(|o| snapshot.get(o).is_none()) {
                    reads.incomplete.fetch_add(1, Ordering::Relaxed);
                } else if versions.iter().any(Option::is_none) {
                    reads.torn.fetch_add(1, Ordering::Relaxed);
                } else if versions.windows(2).any(|w| w[0] != w[1]) {
                    reads.mixed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // The version every file shows, when they agree.
    let mut child = pod.start(&admin);
    let (mut kills, mut restarts_to_version) = (0u64, Vec::new());
    let started = Instant::now();
    for n in 0..=ROTATIONS {
        if n > 0 {
            pod.set_version(n);
        }
        if n > 0 && random.below(2) == 0 {
            tokio::time::sleep(Duration::from_millis(random.below(40))).await;
            child.start_kill().unwrap();
            child.wait().await.unwrap();
            kills += 1;
            let killed_at = Instant::now();
            child = pod.start(&admin);
            let deadline = Instant::now() + Duration::from_secs(20);
            while current_version(&secrets) != Some(n) {
                assert!(
                    Instant::now() < deadline,
                    "version {n} not reached 20 s after a restart"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            restarts_to_version.push(killed_at.elapsed());
        } else {
            let deadline = Instant::now() + Duration::from_secs(20);
            while current_version(&secrets) != Some(n) {
                assert!(Instant::now() < deadline, "version {n} not reached in 20 s");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    let elapsed = started.elapsed();
    // Usable after the last restart: ready, and one more sync leaves exactly one version.
    let mut ready = false;
    for _ in 0..200 {
        if http_get(&admin, "/readyz")
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "the sidecar is not ready after the last restart");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let mut entries: Vec<String> = std::fs::read_dir(&secrets)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    let versions: Vec<&String> = entries.iter().filter(|e| e.starts_with("..2")).collect();
    assert_eq!(versions.len(), 1, "one version left: {entries:?}");
    assert!(!entries.iter().any(|e| e == "..data_tmp"), "{entries:?}");
    assert_eq!(entries.len(), 2 + OBJECTS.len(), "{entries:?}");

    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (total, torn, mixed, incomplete, errors) = (
        count(&reads.total),
        count(&reads.torn),
        count(&reads.mixed),
        count(&reads.incomplete),
        count(&reads.errors),
    );
    restarts_to_version.sort();
    let median = restarts_to_version
        .get(restarts_to_version.len() / 2)
        .copied()
        .unwrap_or_default();
    let worst = restarts_to_version.last().copied().unwrap_or_default();
    let report = format!(
        "{ROTATIONS} rotations in {elapsed:.1?}, kill -9 at {kills} random points (seed {seed}); {total} reads: {torn} \
         torn, {mixed} mixed, {incomplete} incomplete, {errors} failed; a killed sidecar restarted to the new \
         version in {median:.0?} (median), {worst:.0?} (worst)"
    );
    println!("   faults: {report}");
    assert!(kills >= ROTATIONS / 4, "{report}");
    assert_eq!((torn, mixed, incomplete, errors), (0, 0, 0, 0), "{report}");
    assert!(total > ROTATIONS, "{report}");
}

/// Whether this process may make a mount namespace and mount a tmpfs in it (root, or CAP_SYS_ADMIN).
fn can_mount() -> bool {
    std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=64k",
            "probe",
            "/mnt",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `script` with `sh -c` in the mount namespace of process `pid`.
fn in_namespace_of(pid: u32, script: &str) {
    let _ = std::process::Command::new("nsenter")
        .args(["--target", &pid.to_string(), "--mount", "--", "sh", "-c", script])
        .output()
        .unwrap();
}

/// The secrets directory on a full filesystem: a 256 KiB tmpfs in a mount namespace of the test's own (nothing of
/// the machine's is touched), filled up while a new version waits in Key Vault. The sidecar keeps the last good
/// files, logs the failure naming the file, counts it in its metrics, stays ready (the files it serves are still
/// there), leaves no partial version behind, and writes the new version once space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_keeps_the_last_good_files_is_reported_and_recovers_when_space_returns() {
    if !can_mount() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true, but this process cannot mount a tmpfs in a mount namespace of its own (needs root)"
        );
        eprintln!("skipped: cannot mount a tmpfs in a mount namespace of our own (needs root; CI runs it)");
        return;
    }
    let pod = pod().await;
    pod.set_version(1);
    let admin = free_admin();
    let mount = pod.dir.path().join("mnt");
    std::fs::create_dir(&mount).unwrap();
    let log = pod.dir.path().join("sidecar.log");
    let mount_str = mount.display().to_string();
    let mut child = pod
        .command_in(
            &[
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                "mount -t tmpfs -o size=256k wi-full-test \"$0\" && exec \"$@\"",
                &mount_str,
            ],
            &["run", "--admin-listen", &admin, "--interval", "200ms", "--jitter", "0"],
            &OBJECTS,
        )
        .env("WI_SECRETS_DIR", mount.join("secrets"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    // The directory as the sidecar sees it, from outside its namespace.
    let secrets = std::path::PathBuf::from(format!("/proc/{pid}/root{}", mount.join("secrets").display()));
    let current = || current_version(&secrets);
    let wait_for = |n: u64, limit: Duration| {
        let deadline = Instant::now() + limit;
        async move {
            while current() != Some(n) {
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            true
        }
    };
    assert!(
        wait_for(1, Duration::from_secs(20)).await,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // Fill the filesystem, then a new version appears in Key Vault.
    let mount_in = mount.display();
    in_namespace_of(pid, &format!("head -c 1M /dev/zero > {mount_in}/filler"));
    pod.set_version(2);
    let metric = |series: &'static str| {
        let admin = admin.clone();
        async move {
            http_get(&admin, "/metrics")
                .await
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with(series))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric("wi_sidecar_consecutive_failures").await < 3 {
        assert!(
            Instant::now() < deadline,
            "no failed sync counted: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(current(), Some(1), "the last good files stay");
    let ready = http_get(&admin, "/readyz").await.unwrap_or_default();
    assert!(
        ready.starts_with("HTTP/1.1 200"),
        "still ready, the files are there: {ready}"
    );
    assert!(metric("wi_sidecar_syncs_total{result=\"failed\"}").await >= 3);
    let logged = std::fs::read_to_string(&log).unwrap();
    let failure = logged
        .lines()
        .find(|l| l.contains("sync failed"))
        .unwrap_or_else(|| panic!("no failure logged: {logged}"));
    assert!(failure.contains("No space left on device"), "{failure}");
    assert!(
        OBJECTS.iter().any(|o| failure.contains(o)),
        "the error names the file: {failure}"
    );
    assert!(!logged.contains(&value(2)[..40]), "no value in the log");

    // Space returns.
    in_namespace_of(pid, &format!("rm {mount_in}/filler"));
    let freed = Instant::now();
    assert!(
        wait_for(2, Duration::from_secs(20)).await,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let recovered_after = freed.elapsed();
    let mut entries: Vec<String> = std::fs::read_dir(&secrets)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(
        entries.iter().filter(|e| e.starts_with("..2")).count(),
        1,
        "{entries:?}"
    );
    assert!(!entries.iter().any(|e| e == "..data_tmp"), "{entries:?}");
    println!(
        "   faults: disk full (256 KiB tmpfs): last good files kept through {} failed syncs; the new version \
         written {recovered_after:.0?} after space returned (interval 200 ms)",
        metric("wi_sidecar_syncs_total{result=\"failed\"}").await
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

/// Writes `content` to `path` the way kubelet rotates a projected token: a new file renamed over the old one.
fn rotate_token(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::write(&tmp, content).unwrap();
    let _ = std::fs::remove_dir(path);
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits until the log at `log` has a new `sync failed` line (after the first `seen`); returns it.
async fn next_failure(log: &std::path::Path, seen: &mut usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let failures: Vec<&str> = text.lines().filter(|l| l.contains("sync failed")).collect();
        if failures.len() > *seen {
            *seen = failures.len();
            return failures[failures.len() - 1].to_owned();
        }
        assert!(Instant::now() < deadline, "no new failure logged:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pod's projected token, as kubelet may leave it. Missing or unreadable at start (the volume not mounted; here
/// a directory, since root reads any file): `run` exits at once naming the file, writing nothing. Expired: every sync
/// is refused with Entra ID's AADSTS700024, `/readyz` answers 503, the last good files (of an earlier run) stay, and
/// neither the token nor a value is logged. Rotated by kubelet to a good token: used by the next sync (a refused
/// credential is rebuilt, so azure_identity's 600 s cache of the file does not hold the expired one), ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_unreadable_or_expired_token_keeps_the_files_says_why_and_a_rotation_recovers() {
    let pod = pod().await;
    pod.set_version(1);
    let out = pod.command(&["once"], &OBJECTS).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secrets = pod.dir.path().join("secrets");
    let token = pod.dir.path().join("token");
    let token_path = token.display().to_string();
    let good = std::fs::read_to_string(&token).unwrap();
    pod.set_version(2);
    let current = || current_version(&secrets);
    let admin = free_admin();
    let run = ["run", "--admin-listen", &admin, "--interval", "200ms", "--jitter", "0"];

    // Missing, then unreadable: refused at start.
    std::fs::remove_file(&token).unwrap();
    for unreadable in [false, true] {
        if unreadable {
            std::fs::create_dir(&token).unwrap();
        }
        let out = tokio::time::timeout(Duration::from_secs(20), pod.command(&run, &OBJECTS).output())
            .await
            .expect("run exits when the token file cannot be read")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(&token_path), "{stderr}");
        assert_eq!(current(), Some(1), "the last good files stay");
    }
    std::fs::remove_dir(&token).unwrap();

    // Expired: refused by Entra ID, sync after sync.
    let issued = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 7200;
    let expired = pod
        .emulator
        .service_account_token_for(
            "default",
            "my-app-sa",
            "api://AzureADTokenExchange",
            issued,
            Duration::from_secs(3600),
        )
        .unwrap();
    rotate_token(&token, &expired);
    let log = pod.dir.path().join("sidecar.log");
    let mut child = pod
        .command(&run, &OBJECTS)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut seen = 0;
    let refused = next_failure(&log, &mut seen).await;
    assert!(
        refused.contains("AADSTS700024"),
        "the expired token is named by Entra ID's code: {refused}"
    );
    let ready = http_get(&admin, "/readyz").await.unwrap_or_default();
    assert!(
        ready.starts_with("HTTP/1.1 503"),
        "not ready before a sync succeeded: {ready}"
    );
    assert_eq!(current(), Some(1));

    // kubelet rotates the token: the next sync builds a new credential, which reads it (azure_identity alone keeps
    // the file's content for 600 s).
    rotate_token(&token, &good);
    let rotated = Instant::now();
    while current() != Some(2) {
        assert!(
            rotated.elapsed() < Duration::from_secs(20),
            "the rotated token was not used:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recovered_after = rotated.elapsed();
    let ready = http_get(&admin, "/readyz").await.unwrap_or_default();
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let logged = std::fs::read_to_string(&log).unwrap();
    for token in [&expired, &good] {
        assert!(
            !logged.contains(token.rsplit('.').next().unwrap()),
            "a token in the log"
        );
    }
    assert!(!logged.contains(&value(1)[..40]), "a value in the log");
    println!(
        "   faults: token missing and unreadable (exit at start, naming the file), expired (AADSTS700024): {seen} \
         failed syncs, not ready, last good files kept; the new version written {recovered_after:.0?} after kubelet's \
         rotation"
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

/// A TCP relay in front of the vault that, once `attack` is set, drops its connections and answers new ones with a
/// TLS certificate of its own CA (one the sidecar does not trust), recording the first bytes each client sends.
struct Relay {
    addr: std::net::SocketAddr,
    attack: Arc<AtomicBool>,
    relayed: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    first_bytes: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Relay {
    /// From now on, new connections get the relay's own certificate; the relayed ones are cut.
    fn attack(&self) {
        self.attack.store(true, Ordering::Relaxed);
        for task in self.relayed.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn relay(upstream: std::net::SocketAddr) -> Relay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let attack = Arc::new(AtomicBool::new(false));
    let first_bytes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.self_signed(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let relayed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (attack_flag, bytes, tasks) = (attack.clone(), first_bytes.clone(), relayed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            if attack_flag.load(Ordering::Relaxed) {
                let mut peek = [0u8; 1];
                // A client that closes without a byte (Ok(0)) sent nothing in plain text either.
                if let Ok(1..) = client.peek(&mut peek).await {
                    bytes.lock().unwrap().push(peek[0]);
                }
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(client).await;
                });
            } else {
                tasks.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        }
    });
    Relay {
        addr,
        attack,
        relayed,
        first_bytes,
    }
}

/// The vault's TLS certificate changes to one the sidecar does not trust (a relay in front of the vault starts
/// answering with its own certificate): every sync is refused with a certificate error, nothing is sent in plain
/// text (every connection opens with a TLS handshake record), and the last good files stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_certificate_that_is_not_trusted_is_refused_never_downgraded_and_the_files_stay() {
    let pod = pod().await;
    pod.set_version(1);
    let upstream: std::net::SocketAddr = pod
        .vault_url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let relay = relay(upstream).await;
    let admin = free_admin();
    let log = pod.dir.path().join("sidecar.log");
    let secrets = pod.dir.path().join("secrets");
    let mut child = pod
        .command(
            &["run", "--admin-listen", &admin, "--interval", "200ms", "--jitter", "0"],
            &OBJECTS,
        )
        .env("WI_VAULT_URL_TEMPLATE", format!("https://{}", relay.addr))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let current = || current_version(&secrets);
    let deadline = Instant::now() + Duration::from_secs(20);
    while current() != Some(1) {
        assert!(Instant::now() < deadline, "{}", std::fs::read_to_string(&log).unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.attack();
    pod.set_version(2);
    let mut seen = 0;
    let mut failures = Vec::new();
    for _ in 0..3 {
        failures.push(next_failure(&log, &mut seen).await);
    }
    assert!(
        failures
            .iter()
            .any(|f| f.contains("certificate") || f.contains("UnknownIssuer")),
        "a certificate error: {failures:?}"
    );
    assert_eq!(current(), Some(1), "the last good files stay");
    let first = relay.first_bytes.lock().unwrap().clone();
    assert!(!first.is_empty(), "the sidecar did not reconnect");
    assert!(
        first.iter().all(|&b| b == 0x16),
        "every connection opened with a TLS handshake record (0x16), never plain HTTP: {first:?}"
    );
    println!(
        "   faults: untrusted vault certificate: {} connections, all TLS, refused; {seen} failed syncs; files kept",
        first.len()
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
