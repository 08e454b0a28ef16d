//! Availability under faults, with real node processes (issue 12): a steady
//! signing load runs through a failing-over client while nodes are killed
//! (kill -9), stopped (SIGSTOP), restarted (SIGTERM), reloaded (SIGHUP) and
//! rotated. Each case fails if a request fails; the latency figures are
//! printed (`cargo test --test availability -- --nocapture`), not asserted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{lines_until, spawn_node_process, ADMIN, CLIENT};
use thresig::client::{Client, ClientConfig};
use thresig::cluster::{LocalCluster, TRUST_DOMAIN};

/// Node processes (a, b, c, ...) with key k, 2-of-{a, b, c}.
struct Procs {
    _dir: tempfile::TempDir,
    c: LocalCluster,
    procs: Vec<Option<Child>>,
}

impl Procs {
    async fn start() -> Self {
        Self::start_with(&["a", "b", "c"]).await
    }

    async fn start_with(names: &[&str]) -> Self {
        let mut p = Self::prepare(names).await;
        for i in 0..names.len() {
            p.spawn(i);
        }
        p
    }

    /// Nodes a, b and c with key k, b's peer plane reached by the others
    /// through a proxy that a test can cut off.
    async fn start_with_b_behind(proxy: &Blackhole) -> Self {
        let mut p = Self::prepare(&["a", "b", "c"]).await;
        let b = p.c.configs[1].listen_peer.to_string();
        for i in [0, 2] {
            let path = p.c.configs[i].data_dir.parent().unwrap().join("node.toml");
            let text = std::fs::read_to_string(&path).unwrap();
            let moved = text.replace(
                &format!("peer_addr = \"{b}\""),
                &format!("peer_addr = \"{}\"", proxy.forward_to(&b)),
            );
            assert_ne!(moved, text, "b's peer address is in {}", path.display());
            std::fs::write(&path, moved).unwrap();
        }
        for i in 0..3 {
            p.spawn(i);
        }
        p
    }

    /// The cluster and key, created in-process; no node process runs yet.
    async fn prepare(names: &[&str]) -> Self {
        let (dir, mut c) = common::cluster(names).await;
        let committee: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        c.client(0, ADMIN)
            .unwrap()
            .create_key("k", 2, &committee)
            .await
            .unwrap();
        let mut procs = Vec::new();
        for i in 0..names.len() {
            c.stop_node(i).await;
            procs.push(None);
        }
        Self {
            _dir: dir,
            c,
            procs,
        }
    }

    /// Starts node `i`'s process and waits until it serves.
    fn spawn(&mut self, i: usize) {
        let (child, rx) = spawn_node_process(&self.c, i);
        assert!(
            lines_until(&rx, "serving").is_some(),
            "node {i} did not start"
        );
        // Keep reading its stderr (so the pipe never fills) into a log file
        // that a failing case shows the errors of.
        let log = self.log(i);
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            while let Ok(line) = rx.recv() {
                let _ = writeln!(f, "{line}");
            }
        });
        self.procs[i] = Some(child);
    }

    fn log(&self, i: usize) -> std::path::PathBuf {
        self.c.configs[i]
            .data_dir
            .parent()
            .unwrap()
            .join("stderr.log")
    }

    /// The ERROR lines (and any internal error) every node process logged.
    fn problems(&self) -> Vec<String> {
        (0..self.procs.len())
            .flat_map(|i| {
                std::fs::read_to_string(self.log(i))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("ERROR") || l.contains("internal"))
                    .map(|l| format!("{}: {l}", self.c.configs[i].name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.procs[i].as_ref().unwrap().id().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Fails the case if any request failed, showing the nodes' errors.
    fn assert_none_failed(&self, failed: &[String]) {
        assert!(
            failed.is_empty(),
            "{} failed: {failed:?}\nnode errors: {:#?}",
            failed.len(),
            self.problems()
        );
    }

    /// kill -9 and reap.
    fn kill(&mut self, i: usize) {
        let mut child = self.procs[i].take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM (the node drains) and wait for it to exit.
    fn terminate(&mut self, i: usize) {
        self.signal(i, "-TERM");
        let mut child = self.procs[i].take().unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "node {i} exited with {status}");
    }

    /// A client of every node, `first` first (it fails over in order).
    fn failover_client(&self, first: usize) -> Client {
        let cfg = |i: usize| {
            ClientConfig::from_dir(
                &self.c.layout.dir,
                TRUST_DOMAIN,
                CLIENT,
                self.c.configs[i].name.as_str(),
                self.c.configs[i].listen_client,
            )
        };
        let mut client = Client::connect(&cfg(first)).unwrap();
        for i in (0..self.procs.len()).filter(|i| *i != first) {
            client = client
                .with_failover(
                    &cfg(first),
                    self.c.configs[i].name.as_str(),
                    self.c.configs[i].listen_client,
                )
                .unwrap();
        }
        client
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            if self.procs[i].is_some() {
                let _ = std::process::Command::new("kill")
                    .args(["-CONT", &self.procs[i].as_ref().unwrap().id().to_string()])
                    .status();
                let mut child = self.procs[i].take().unwrap();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A TCP proxy that forwards to one address until it is cut off; then it
/// accepts connections and forwards nothing either way, closing nothing (a
/// peer plane behind a network fault), until it is restored.
struct Blackhole {
    addr: std::net::SocketAddr,
    target: Arc<Mutex<Option<std::net::SocketAddr>>>,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Blackhole {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::default();
        let (cut, _) = tokio::sync::watch::channel(false);
        let (to, cut_rx) = (target.clone(), cut.subscribe());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (to, cut) = (*to.lock().unwrap(), cut_rx.clone());
                tokio::spawn(async move {
                    let Some(to) = to else { return };
                    Self::pipe(inbound, to, cut).await;
                });
            }
        });
        Self { addr, target, cut }
    }

    /// Forwards to `target` from now on; returns the proxy's address.
    fn forward_to(&self, target: &str) -> std::net::SocketAddr {
        *self.target.lock().unwrap() = Some(target.parse().unwrap());
        self.addr
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }

    async fn pipe(
        inbound: tokio::net::TcpStream,
        to: std::net::SocketAddr,
        mut cut: tokio::sync::watch::Receiver<bool>,
    ) {
        // A connection made while cut off is held, unanswered, until restored.
        if cut.wait_for(|c| !*c).await.is_err() {
            return;
        }
        let Ok(outbound) = tokio::net::TcpStream::connect(to).await else {
            return;
        };
        let (ri, wi) = inbound.into_split();
        let (ro, wo) = outbound.into_split();
        tokio::join!(Self::copy(ri, wo, cut.clone()), Self::copy(ro, wi, cut));
    }

    /// Copies until either side closes; while cut off, holds what it read.
    async fn copy(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut cut: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if cut.wait_for(|c| !*c).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}

/// One request of the load: when it started, how long it took, and its
/// failure (gRPC code name) if it failed.
type Sample = (Instant, Duration, Option<String>);

/// Signs with key k at a steady rate (`workers` clients, each one request
/// every `every`) until stopped; keeps every sample.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(p: &Procs, first: usize, workers: usize, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..workers)
            .map(|w| {
                let (stop, samples) = (stop.clone(), samples.clone());
                let mut client = p.failover_client(first);
                tokio::spawn(async move {
                    let mut n = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        n = n.wrapping_add(1);
                        let mut d = [0u8; 32];
                        d[..4].copy_from_slice(&n.to_be_bytes());
                        d[4] = w as u8;
                        let started = Instant::now();
                        let r = client.sign("k", d, "", "").await;
                        let failed = r.err().map(|e| format!("{:?}: {e}", e.code()));
                        samples
                            .lock()
                            .unwrap()
                            .push((started, started.elapsed(), failed));
                        tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            samples,
            tasks,
        }
    }

    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.samples).unwrap().into_inner().unwrap()
    }
}

/// Prints sent / ok / failed and p50 / p99 before, during and after the
/// event window, and returns the failures.
fn report(case: &str, samples: &[Sample], during: (Instant, Instant)) -> Vec<String> {
    let phase = |name: &str, pick: &dyn Fn(&Instant) -> bool| {
        let mut ms: Vec<f64> = samples
            .iter()
            .filter(|s| pick(&s.0) && s.2.is_none())
            .map(|s| s.1.as_secs_f64() * 1000.0)
            .collect();
        let sent = samples.iter().filter(|s| pick(&s.0)).count();
        ms.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if ms.is_empty() {
                f64::NAN
            } else {
                ms[((ms.len() - 1) as f64 * p).round() as usize]
            }
        };
        format!(
            "{name}: sent {sent}, ok {}, failed {}, p50 {:.0} ms, p99 {:.0} ms",
            ms.len(),
            sent - ms.len(),
            pct(0.5),
            pct(0.99)
        )
    };
    let (from, to) = during;
    eprintln!(
        "[{case}]\n  {}\n  {}\n  {}",
        phase("before", &|t| *t < from),
        phase("during", &|t| *t >= from && *t < to),
        phase("after ", &|t| *t >= to),
    );
    samples.iter().filter_map(|s| s.2.clone()).collect()
}

/// Lets the load run for `d` before an event (the "before" figures).
async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_rotation_coordinator_at_ten_moments_fails_no_request() {
    let mut p = Procs::start().await;
    // The load's first node is b: the coordinator that dies (a) is not the
    // one the client talks to, but a is a signer in b's preferred set.
    let load = Load::start(&p, 1, 2, Duration::from_millis(50));
    settle(Duration::from_secs(2)).await;
    // One whole rotation under the load: the ten moments spread over it,
    // from the start of the refresh to the activation.
    let started = Instant::now();
    p.c.client(0, ADMIN).unwrap().rotate_key("k").await.unwrap();
    let whole = started.elapsed();
    let from = Instant::now();
    let mut outcomes = Vec::new();
    for moment in 0..10u32 {
        let delay = whole * moment / 10;
        let mut admin = p.c.client(0, ADMIN).unwrap();
        let rotation = tokio::spawn(async move { admin.rotate_key("k").await });
        tokio::time::sleep(delay).await;
        p.kill(0);
        outcomes.push(match rotation.await.unwrap() {
            Ok(r) => format!("{}ms: finished (epoch {})", delay.as_millis(), r.new_epoch),
            Err(_) => format!("{}ms: cut", delay.as_millis()),
        });
        p.spawn(0);
    }
    // The next rotation works at once, through the restarted node, and every
    // node ends on one epoch.
    let r = p.c.client(0, ADMIN).unwrap().rotate_key("k").await.unwrap();
    let to = Instant::now();
    settle(Duration::from_secs(2)).await;
    let samples = load.stop().await;
    eprintln!(
        "a whole rotation took {} ms; kill -9 of a after: {outcomes:?}; then epoch {}",
        whole.as_millis(),
        r.new_epoch
    );
    let failed = report(
        "kill -9 of the rotation coordinator, 10 moments",
        &samples,
        (from, to),
    );
    p.assert_none_failed(&failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigstop_of_a_committee_node_fails_no_request() {
    let p = Procs::start().await;
    let load = Load::start(&p, 0, 2, Duration::from_millis(50));
    settle(Duration::from_secs(2)).await;
    let from = Instant::now();
    p.signal(1, "-STOP");
    tokio::time::sleep(Duration::from_secs(20)).await;
    p.signal(1, "-CONT");
    let to = Instant::now();
    settle(Duration::from_secs(3)).await;
    // Then c, which a's sessions do not need (a signs with b): a must not
    // wait for c's status answer while b waits for a.
    let c_from = Instant::now();
    p.signal(2, "-STOP");
    tokio::time::sleep(Duration::from_secs(10)).await;
    p.signal(2, "-CONT");
    let c_to = Instant::now();
    settle(Duration::from_secs(3)).await;
    let samples = load.stop().await;
    let (first, second): (Vec<Sample>, Vec<Sample>) =
        samples.into_iter().partition(|s| s.0 < c_from);
    let mut failed = report("SIGSTOP of b for 20 s, load through a", &first, (from, to));
    failed.extend(report(
        "SIGSTOP of c (outside a's signer set) for 10 s",
        &second,
        (c_from, c_to),
    ));
    p.assert_none_failed(&failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restarts_and_certificate_reloads_fail_no_request() {
    let mut p = Procs::start().await;
    let load = Load::start(&p, 0, 2, Duration::from_millis(50));
    settle(Duration::from_secs(2)).await;
    let from = Instant::now();
    for _ in 0..2 {
        for i in 0..3 {
            p.terminate(i);
            p.spawn(i);
        }
    }
    let to = Instant::now();
    settle(Duration::from_secs(2)).await;
    // Then a certificate rotation of every node under load: new certificates
    // from the same CA, picked up by SIGHUP.
    let cert_from = Instant::now();
    let ca = {
        let cert = std::fs::read_to_string(p.c.layout.ca_cert()).unwrap();
        let key = std::fs::read_to_string(p.c.layout.ca_key()).unwrap();
        thresig::pki::Ca::load(TRUST_DOMAIN, &cert, &key).unwrap()
    };
    for i in 0..3 {
        let fresh = ca
            .issue(thresig::pki::Role::Node, p.c.configs[i].name.as_str(), 30)
            .unwrap();
        std::fs::write(&p.c.configs[i].tls.cert, fresh.cert_pem.as_bytes()).unwrap();
        std::fs::write(&p.c.configs[i].tls.key, fresh.key_pem.expose()).unwrap();
        p.signal(i, "-HUP");
    }
    settle(Duration::from_secs(3)).await;
    let cert_to = Instant::now();
    // New connections to every node use the new certificates.
    for i in 0..3 {
        let mut client = p.c.client(i, CLIENT).unwrap();
        client.sign("k", [0x77; 32], "", "").await.unwrap();
    }
    settle(Duration::from_secs(1)).await;
    let samples = load.stop().await;
    let mut failed = report(
        "rolling restart of every node, twice (SIGTERM, start)",
        &samples,
        (from, to),
    );
    let during_certs: Vec<Sample> = samples.iter().filter(|s| s.0 >= to).cloned().collect();
    failed.extend(report(
        "certificate rotation of every node (SIGHUP)",
        &during_certs,
        (cert_from, cert_to),
    ));
    p.assert_none_failed(&failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctrl_c_of_keys_rotate_never_pauses_signing_and_the_next_rotation_runs_at_once() {
    let p = Procs::start().await;
    let load = Load::start(&p, 1, 2, Duration::from_millis(50));
    settle(Duration::from_secs(2)).await;
    let from = Instant::now();
    let mut next = Vec::new();
    for delay_ms in [30u64, 300, 900] {
        let cfg = &p.c.configs[0];
        let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
            .args(["keys", "rotate", "k", "--certs"])
            .arg(&p.c.layout.dir)
            .args([
                "--identity",
                ADMIN,
                "--server",
                "a",
                "--trust-domain",
                TRUST_DOMAIN,
            ])
            .arg("--endpoint")
            .arg(cfg.listen_client.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = std::process::Command::new("kill")
            .args(["-INT", &cli.id().to_string()])
            .status();
        let _ = cli.wait();
        // The next rotation works at once (no wait for a timeout).
        let started = Instant::now();
        let r = p.c.client(0, ADMIN).unwrap().rotate_key("k").await;
        next.push(match r {
            Ok(r) => format!(
                "{delay_ms}ms: next rotation ok in {} ms (epoch {})",
                started.elapsed().as_millis(),
                r.new_epoch
            ),
            Err(e) => panic!("{delay_ms}ms: the next rotation failed: {e}"),
        });
    }
    let to = Instant::now();
    settle(Duration::from_secs(2)).await;
    let samples = load.stop().await;
    eprintln!("after Ctrl-C of keys rotate: {next:?}");
    let failed = report(
        "Ctrl-C of thresig keys rotate at 3 moments",
        &samples,
        (from, to),
    );
    p.assert_none_failed(&failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reshare_and_a_repair_under_load_fail_no_request() {
    let mut p = Procs::start_with(&["a", "b", "c", "d"]).await;
    let load = Load::start(&p, 0, 2, Duration::from_millis(50));
    settle(Duration::from_secs(2)).await;
    // Reshare: 2-of-{a, b, c} -> 2-of-{a, b, d} (c leaves, d joins).
    let from = Instant::now();
    let committee: Vec<String> = ["a", "b", "d"].map(String::from).to_vec();
    let r =
        p.c.client(0, ADMIN)
            .unwrap()
            .reshare_key("k", &committee, 2)
            .await
            .unwrap();
    let reshared = Instant::now();
    settle(Duration::from_secs(2)).await;
    // Repair: d loses its data (stopped, its store removed, started empty),
    // then gets its share back from the others.
    let repair_from = Instant::now();
    p.kill(3);
    std::fs::remove_dir_all(&p.c.configs[3].data_dir).unwrap();
    p.spawn(3);
    let repaired = p.c.client(0, ADMIN).unwrap().repair_key("k", "d").await;
    let repair_to = Instant::now();
    settle(Duration::from_secs(2)).await;
    let samples = load.stop().await;
    repaired.unwrap();
    eprintln!("reshare to epoch {}, dealers {:?}", r.new_epoch, r.dealers);
    let mut failed = report(
        "reshare 2-of-{a,b,c} -> 2-of-{a,b,d}",
        &samples,
        (from, reshared),
    );
    let later: Vec<Sample> = samples
        .iter()
        .filter(|s| s.0 >= reshared)
        .cloned()
        .collect();
    failed.extend(report(
        "repair of d after its data was removed",
        &later,
        (repair_from, repair_to),
    ));
    p.assert_none_failed(&failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blackhole_of_one_nodes_peer_plane_for_20_s_fails_no_request() {
    let proxy = Blackhole::start().await;
    let p = Procs::start_with_b_behind(&proxy).await;
    let load = Load::start(&p, 0, 2, Duration::from_millis(50));
    settle(Duration::from_secs(2)).await;
    // a and c reach b only through the proxy: cut it off (connections stay
    // open, nothing gets through), then restore it.
    let from = Instant::now();
    proxy.set_cut(true);
    tokio::time::sleep(Duration::from_secs(20)).await;
    proxy.set_cut(false);
    let to = Instant::now();
    settle(Duration::from_secs(3)).await;
    let samples = load.stop().await;
    let failed = report(
        "blackhole of b's peer plane for 20 s, load through a",
        &samples,
        (from, to),
    );
    p.assert_none_failed(&failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_half_open_connections_while_a_node_restarts_fail_no_request() {
    use std::sync::atomic::AtomicUsize;
    let mut p = Procs::start().await;
    let load = Load::start(&p, 0, 2, Duration::from_millis(50));
    settle(Duration::from_secs(2)).await;
    // 2,000 connections to a's peer port that never send a byte, reopened
    // as a drops them, for 30 s; meanwhile c restarts and must reach a.
    let target = p.c.configs[0].listen_peer;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let from = Instant::now();
    let flood: Vec<_> = (0..2000)
        .map(|_| tokio::spawn(common::hold_half_open(target, stop.clone(), opened.clone())))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while opened.load(Ordering::Relaxed) < 2000 {
        assert!(Instant::now() < deadline, "the flood never got going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.terminate(2);
    p.spawn(2);
    // c coordinates a signature and a rotation: the rotation runs a session
    // with every committee node, so it needs c's new connections to a (and
    // a's to c). Whether c's first signature has a or b as co-signer depends
    // on how fast a's handshake goes on a busy machine, so it is printed.
    let d = [0x5a; 32];
    let resp =
        p.c.client(2, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap();
    let r = p.c.client(2, ADMIN).unwrap().rotate_key("k").await.unwrap();
    while from.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.await.unwrap();
    }
    let to = Instant::now();
    settle(Duration::from_secs(2)).await;
    let samples = load.stop().await;
    eprintln!(
        "{} half-open connections opened in 30 s; c restarted, signed with {:?}, rotated every \
         node to epoch {}",
        opened.load(Ordering::Relaxed),
        resp.participants,
        r.new_epoch
    );
    assert_eq!(r.new_epoch, 1, "{r:?}");
    let failed = report(
        "2,000 half-open connections to a's peer port for 30 s, c restarting",
        &samples,
        (from, to),
    );
    p.assert_none_failed(&failed);
}
