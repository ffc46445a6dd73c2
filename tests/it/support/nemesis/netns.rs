//! Network namespaces for the nemesis suite: a "hub" namespace holding a bridge, and one
//! namespace per node joined to it by a veth pair; processes started inside them; faults on
//! their links (nft drops, link down, `tc` delay).
//!
//! Owns: every namespace, link and process it creates (all removed or killed by pid on `Drop`,
//! also after a panic), and the sweep of leftovers of crashed runs (names `dcn-<pid>-…` whose
//! pid is gone). Leaves to others: what runs in the namespaces (the cluster harness) and what
//! the faults mean (the nemesis).
//!
//! Nothing is added to the root namespace: the bridge lives in the hub namespace, and the test
//! process reaches a node's loopback through a Unix socket forwarder (`socat`), because Unix
//! sockets cross network namespaces.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::super::wait_until;

/// Prefix of every namespace this suite creates.
pub const PREFIX: &str = "dcn-";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Fails with a clear message unless the process may create namespaces (root / CAP_NET_ADMIN)
/// and the tools exist.
pub fn require_root_and_tools() {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .unwrap_or_default();
    assert!(
        euid == "0",
        "the nemesis suite creates network namespaces and needs root (CAP_NET_ADMIN); run the tests as root (CI does)"
    );
    for (tool, package) in [("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables"), ("socat", "socat")] {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().any(|d| Path::new(d).join(tool).is_file());
        assert!(found, "{tool} not found: install Debian {package} (scripts/setup.sh --test does)");
    }
}

/// Runs a command, panicking with its stderr when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs a command, returning whether it succeeded (and its stderr).
pub fn try_sh(args: &[&str]) -> Result<String, String> {
    match Command::new(args[0]).args(&args[1..]).output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `nft -f -` in `ns` with `script` on stdin.
fn nft(ns: &str, script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    child.stdin.take().map(|mut s| s.write_all(script.as_bytes())).transpose().map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Deletes namespaces named `dcn-<pid>-…` whose creating process is gone (a crashed run).
pub fn sweep_leftovers() {
    let Ok(list) = try_sh(&["ip", "netns", "list"]) else { return };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let pid: Option<u32> = rest.split('-').next().and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists()) {
            kill_all_in(name);
            let _ = try_sh(&["ip", "netns", "del", name]);
            eprintln!("nemesis: removed leftover namespace {name}");
        }
    }
}

/// SIGKILLs every process inside namespace `ns` (`ip netns pids`).
fn kill_all_in(ns: &str) {
    if let Ok(pids) = try_sh(&["ip", "netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = try_sh(&["kill", "-CONT", pid]);
            let _ = try_sh(&["kill", "-KILL", pid]);
        }
    }
}

/// One node's namespace: its name and address on the bridge.
#[derive(Debug, Clone)]
pub struct NodeNs {
    /// Namespace name.
    pub ns: String,
    /// Address on the bridge (`eth0` inside the namespace).
    pub addr: Ipv4Addr,
}

/// The namespaces of one test run; removes them (and kills what runs in them) on drop.
pub struct Net {
    /// The hub namespace (bridge `br0`, address `10.77.0.1`).
    pub hub: String,
    /// Node namespaces by creation order.
    pub nodes: Vec<NodeNs>,
    tag: String,
    /// Whether `tc netem` works on this kernel (else delay is approximated, see [`Net::degrade`]).
    pub netem: bool,
}

/// The hub's address (where FerretDB listens).
pub const HUB_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

impl Net {
    /// Creates the hub namespace with its bridge.
    pub fn new() -> Net {
        require_root_and_tools();
        sweep_leftovers();
        let tag = format!("{PREFIX}{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let hub = format!("{tag}-hub");
        sh(&["ip", "netns", "add", &hub]);
        let mut net = Net { hub: hub.clone(), nodes: Vec::new(), tag, netem: false };
        sh(&["ip", "-n", &hub, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &hub, "addr", "add", &format!("{HUB_ADDR}/24"), "dev", "br0"]);
        sh(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        net.netem =
            try_sh(&["ip", "netns", "exec", &hub, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
                .is_ok();
        let _ = try_sh(&["ip", "netns", "exec", &hub, "tc", "qdisc", "del", "dev", "lo", "root"]);
        net
    }

    /// Adds a node namespace `name` at `10.77.0.<host>`, joined to the bridge.
    pub fn add_node(&mut self, name: &str, host: u8) -> NodeNs {
        let ns = format!("{}-{name}", self.tag);
        sh(&["ip", "netns", "add", &ns]);
        let hub_link = format!("v{}", self.nodes.len());
        let node = NodeNs { ns: ns.clone(), addr: Ipv4Addr::new(10, 77, 0, host) };
        self.nodes.push(node.clone());
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &self.hub, "link", "add", &hub_link, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        sh(&["ip", "-n", &self.hub, "link", "set", &hub_link, "master", "br0"]);
        sh(&["ip", "-n", &self.hub, "link", "set", &hub_link, "up"]);
        sh(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", node.addr), "dev", "eth0"]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        // A table the nemesis fills and flushes; empty = no fault.
        let table = "table inet nemesis {\n chain input { type filter hook input priority 0; }\n chain output { type filter hook output priority 0; }\n}\n";
        nft(&ns, table).unwrap_or_else(|e| panic!("nft in {ns}: {e}"));
        node
    }

    /// Drops every packet between `node` and `peers` (both directions), nothing else.
    pub fn block(&self, node: &NodeNs, peers: &[Ipv4Addr]) {
        let mut script = String::new();
        for p in peers {
            script.push_str(&format!("add rule inet nemesis input ip saddr {p} drop\n"));
            script.push_str(&format!("add rule inet nemesis output ip daddr {p} drop\n"));
        }
        nft(&node.ns, &script).unwrap_or_else(|e| panic!("nft block in {}: {e}", node.ns));
    }

    /// Drops `percent` % of the packets `node` sends and receives on its link.
    pub fn loss(&self, node: &NodeNs, percent: u8) {
        let script = format!(
            "add rule inet nemesis input iifname \"eth0\" numgen random mod 100 < {percent} drop\n\
             add rule inet nemesis output oifname \"eth0\" numgen random mod 100 < {percent} drop\n"
        );
        nft(&node.ns, &script).unwrap_or_else(|e| panic!("nft loss in {}: {e}", node.ns));
    }

    /// Delay `delay_ms` ± `jitter_ms` on `node`'s link: `tc netem` where the kernel has it,
    /// else a `tbf` shaper (a queue that delays bursts up to `delay_ms`). Returns what it did.
    pub fn degrade(&self, node: &NodeNs, delay_ms: u32, jitter_ms: u32) -> String {
        let base = ["ip", "netns", "exec", node.ns.as_str(), "tc", "qdisc", "replace", "dev", "eth0", "root"];
        if self.netem {
            let (d, j) = (format!("{delay_ms}ms"), format!("{jitter_ms}ms"));
            let mut args = base.to_vec();
            args.extend(["netem", "delay", d.as_str(), j.as_str()]);
            sh(&args);
            format!("netem delay {delay_ms}ms ±{jitter_ms}ms")
        } else {
            let lat = format!("{delay_ms}ms");
            let mut args = base.to_vec();
            args.extend(["tbf", "rate", "2mbit", "burst", "16kb", "latency", lat.as_str()]);
            sh(&args);
            format!("tbf 2mbit queue up to {delay_ms}ms (no sch_netem in this kernel)")
        }
    }

    /// Sets `node`'s link down (`up = false`) or up.
    pub fn link(&self, node: &NodeNs, up: bool) {
        sh(&["ip", "-n", &node.ns, "link", "set", "eth0", if up { "up" } else { "down" }]);
    }

    /// Removes every fault of `node`: rules, qdisc, link up.
    pub fn heal(&self, node: &NodeNs) {
        let _ = nft(&node.ns, "flush chain inet nemesis input\nflush chain inet nemesis output\n");
        let _ = try_sh(&["ip", "netns", "exec", &node.ns, "tc", "qdisc", "del", "dev", "eth0", "root"]);
        let _ = try_sh(&["ip", "-n", &node.ns, "link", "set", "eth0", "up"]);
    }
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &self.nodes {
            kill_all_in(&n.ns);
        }
        kill_all_in(&self.hub);
        for n in &self.nodes {
            let _ = try_sh(&["ip", "netns", "del", &n.ns]);
        }
        let _ = try_sh(&["ip", "netns", "del", &self.hub]);
    }
}

/// A process started inside a namespace (`ip netns exec` execs it, so the pid is its own);
/// SIGKILLed (after SIGCONT) on drop.
pub struct NsProc {
    child: Option<Child>,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
    ns: String,
    program: Vec<String>,
    env: Vec<(String, String)>,
}

impl NsProc {
    /// Starts `program` in `ns` (empty = the root namespace) with `env`, output to `log`.
    pub fn start(ns: &str, program: &[String], env: &[(String, String)], log: &Path) -> NsProc {
        let mut p = NsProc {
            child: None,
            log: log.to_owned(),
            ns: ns.to_owned(),
            program: program.to_vec(),
            env: env.to_vec(),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open process log");
        let mut cmd = if self.ns.is_empty() {
            Command::new(&self.program[0])
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.ns]).arg(&self.program[0]);
            c
        };
        cmd.args(&self.program[1..])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.program)));
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, `TERM`).
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = try_sh(&["kill", &format!("-{signal}"), &pid.to_string()]);
        }
    }

    /// SIGKILLs it and waits for its exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = try_sh(&["kill", "-CONT", &c.id().to_string()]);
            let _ = c.kill();
            let _ = wait_until(Duration::from_secs(10), || c.try_wait().ok().flatten());
        }
    }

    /// SIGKILLs it and starts it again with the same command.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NsProc {
    fn drop(&mut self) {
        self.kill();
    }
}
