//! A local cluster of `thresig node run` processes (this same binary) on
//! 127.0.0.1, for `thresig bench --local`. Each node is its own process, as
//! in a deployment, so /proc tells how much CPU each one spent. The
//! processes are killed when the cluster is dropped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

use super::proxy::DelayProxy;
use crate::client::Client;
use crate::cluster::{client_of, LocalCluster, NodeAddrs, ADMIN};
use crate::config::NodeConfig;
use crate::node::Timeouts;
use crate::pki::Layout;

const READY_WITHIN: Duration = Duration::from_secs(60);

pub struct ProcessCluster {
    pub layout: Layout,
    pub configs: Vec<NodeConfig>,
    children: Vec<Option<Child>>,
    exe: PathBuf,
    root: PathBuf,
    _proxies: Vec<DelayProxy>,
}

/// `n` free loopback ports, held (bound) until the caller drops the
/// listeners, so that nothing else started meanwhile takes them.
fn free_ports(n: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    (0..n)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("choosing free ports on 127.0.0.1")
}

impl ProcessCluster {
    /// Writes certificates and configs under `root` and starts one node
    /// process per name. With `one_way`, every peer-plane connection goes
    /// through a proxy that delays each direction by that much.
    pub async fn start(
        root: &std::path::Path,
        names: &[&str],
        timeouts: Timeouts,
        one_way: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let held = free_ports(names.len() * 2)?;
        let ports = held
            .iter()
            .map(std::net::TcpListener::local_addr)
            .collect::<Result<Vec<_>, _>>()?;
        let mut addrs = Vec::new();
        let mut proxies = Vec::new();
        for pair in ports.chunks(2) {
            let (peer, client) = (pair[0], pair[1]);
            let dial = match one_way {
                Some(d) => {
                    let p = DelayProxy::start(peer, d)
                        .await
                        .context("starting a delay proxy")?;
                    let a = p.addr;
                    proxies.push(p);
                    a
                }
                None => peer,
            };
            addrs.push(NodeAddrs { peer, client, dial });
        }
        // The proxies have their ports; the nodes take theirs from here.
        drop(held);
        let (layout, configs) = LocalCluster::write_files(root, names, &addrs, timeouts)?;
        let mut c = Self {
            layout,
            children: configs.iter().map(|_| None).collect(),
            configs,
            exe: std::env::current_exe().context("locating the thresig binary")?,
            root: root.to_owned(),
            _proxies: proxies,
        };
        for i in 0..names.len() {
            c.spawn(i)?;
        }
        for i in 0..names.len() {
            c.wait_ready(i).await?;
        }
        Ok(c)
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.root.join("nodes").join(self.configs[i].name.as_str())
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("node.log")
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .with_context(|| format!("opening {}", self.log_path(i).display()))?;
        let child = Command::new(&self.exe)
            .arg("node")
            .arg("run")
            .arg("--config")
            .arg(self.node_dir(i).join("node.toml"))
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} node run", self.exe.display()))?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// Waits until node `i` answers an admin request on its client plane.
    async fn wait_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut admin = self.client(i, ADMIN)?;
        loop {
            if admin.list_keys().await.is_ok() {
                return Ok(());
            }
            let exited = match self.children[i].as_mut() {
                Some(c) => c.try_wait()?,
                None => None,
            };
            if exited.is_some() || started.elapsed() > READY_WITHIN {
                let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                anyhow::bail!(
                    "node {} did not come up ({}); its log:\n{}",
                    self.configs[i].name,
                    exited
                        .map(|s| format!("exited with {s}"))
                        .unwrap_or_else(|| format!("no answer within {READY_WITHIN:?}")),
                    log.trim_end()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client of node `i` with the given identity.
    pub fn client(&self, i: usize, identity: &str) -> anyhow::Result<Client> {
        Ok(client_of(&self.layout, &self.configs[i], identity)?)
    }

    /// Stops node `i` (SIGKILL: the bench does not need a clean shutdown).
    pub async fn stop_node(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut c) = self.children[i].take() {
            c.kill().await?;
        }
        Ok(())
    }

    /// A client of every node with the given identity: node 0 first, then
    /// the others in order (it fails over on UNAVAILABLE, a deadline or a
    /// connection failure).
    pub fn failover_client(&self, identity: &str) -> anyhow::Result<Client> {
        let cfg = |c: &NodeConfig| {
            crate::client::ClientConfig::from_dir(
                &self.layout.dir,
                crate::cluster::TRUST_DOMAIN,
                identity,
                c.name.as_str(),
                c.listen_client,
            )
        };
        let first = self.configs.first().context("the cluster has no nodes")?;
        let mut client = Client::connect(&cfg(first))?;
        for c in self.configs.iter().skip(1) {
            client = client.with_failover(&cfg(first), c.name.as_str(), c.listen_client)?;
        }
        Ok(client)
    }

    /// Sends node `i`'s process `sig` (SIGSTOP, SIGCONT).
    pub fn signal(&self, i: usize, sig: rustix::process::Signal) -> anyhow::Result<()> {
        let pid = self.children[i]
            .as_ref()
            .and_then(|c| c.id())
            .and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?))
            .with_context(|| format!("node {} is not running", self.configs[i].name))?;
        rustix::process::kill_process(pid, sig)
            .with_context(|| format!("signalling node {}", self.configs[i].name))
    }

    /// Stops node `i` with SIGTERM (it drains) and waits until it exits.
    pub async fn terminate(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, rustix::process::Signal::TERM)?;
        if let Some(mut c) = self.children[i].take() {
            c.wait().await?;
        }
        Ok(())
    }

    /// Starts node `i` again from its config and data directory.
    pub async fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        self.wait_ready(i).await
    }

    /// CPU seconds (user + system) each running node process has used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<Vec<f64>> {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        self.children
            .iter()
            .flatten()
            .map(|c| {
                let pid = c.id().context("a node process has exited")?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .with_context(|| format!("reading /proc/{pid}/stat"))?;
                cpu_ticks(&stat)
                    .map(|t| t as f64 / ticks)
                    .with_context(|| format!("parsing /proc/{pid}/stat"))
            })
            .collect()
    }
}

/// utime + stime from a /proc/<pid>/stat line (fields 14 and 15; the
/// command name in field 2 may contain spaces, so count after its ')').
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let line =
            "4242 (thresig node) S 1 4242 4242 0 -1 4194304 900 0 0 0 157 23 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_ticks(line), Some(180));
        assert_eq!(cpu_ticks("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(cpu_ticks(&own).is_some());
    }
}
