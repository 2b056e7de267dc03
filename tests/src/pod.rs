//! [`PodNetns`]: a pod's own network namespace next to the sandbox's (the
//! node's), joined to it by a veth pair; and [`PodUdpClient`], a client
//! process living in it.
//!
//! ```text
//!  sandbox ns (node, proxy) ── pod<i> veth 10.250.<i>.1, fd00:250:<i>::1
//!                                 └── eth0 10.250.<i>.2, fd00:250:<i>::2 (pod ns)
//!                                     default via the node
//! ```
//!
//! The pod reaches the backends on the sandbox's `lo` through the node, as a
//! pod reaches a host-network backend. Nothing routes further: the sandbox has
//! no route out. The namespace is named `<sandbox netns>-pod<i>`, so the kit's
//! [`crate::sweep`] removes what a killed run left, and `Drop` deletes it.
//!
//! [`PodUdpClient`] runs `pxt-udp-client` through `nsenter --net`, so it keeps
//! the test's mounts and cgroup (the socket hooks see its `connect()`), and
//! the kernel files its sockets under the pod's namespace, as a real pod's.

use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use crate::{Error, Sandbox, cmd};

/// A pod's network namespace, wired to the sandbox's.
pub struct PodNetns {
    name: String,
    index: u8,
}

impl PodNetns {
    /// Pod `index` (1..=250) next to `sandbox`'s namespace.
    pub fn create(sandbox: &Sandbox, index: u8) -> Result<Self, Error> {
        let name = format!("{}-pod{index}", sandbox.netns_name());
        if Path::new("/run/netns").join(&name).exists() {
            cmd::ip(&["netns", "del", &name])?;
        }
        cmd::ip(&["netns", "add", &name])?;
        let pod = PodNetns { name, index };
        let node_dev = format!("pod{index}");
        let (node4, pod4) = (pod.node_v4(), pod.v4());
        let (node6, pod6) = (pod.node_v6(), pod.v6());
        sandbox.ip(&format!(
            "link add {node_dev} type veth peer name eth0 netns {}",
            pod.name
        ))?;
        sandbox.ip(&format!("addr add {node4}/24 dev {node_dev}"))?;
        sandbox.ip(&format!("-6 addr add {node6}/64 dev {node_dev} nodad"))?;
        sandbox.ip(&format!("link set {node_dev} up"))?;
        pod.ip("link set lo up")?;
        pod.ip(&format!("addr add {pod4}/24 dev eth0"))?;
        pod.ip(&format!("-6 addr add {pod6}/64 dev eth0 nodad"))?;
        pod.ip("link set eth0 up")?;
        pod.ip(&format!("route add default via {node4} dev eth0"))?;
        pod.ip(&format!("-6 route add default via {node6} dev eth0"))?;
        Ok(pod)
    }

    /// `10.250.<i>.2`
    pub fn v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.index, 2)
    }

    /// `fd00:250:<i>::2`
    pub fn v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x250, u16::from(self.index), 0, 0, 0, 0, 2)
    }

    fn node_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.index, 1)
    }

    fn node_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x250, u16::from(self.index), 0, 0, 0, 0, 1)
    }

    /// The pod's address of `ip`'s family.
    pub fn addr_like(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => self.v4().into(),
            IpAddr::V6(_) => self.v6().into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n <pod> <args>` (split on whitespace).
    pub fn ip(&self, args: &str) -> Result<String, Error> {
        let mut argv = vec!["-n", self.name.as_str()];
        argv.extend(args.split_whitespace());
        cmd::ip(&argv)
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        if let Err(e) = cmd::ip(&["netns", "del", &self.name]) {
            eprintln!("pod netns: {e}");
        }
    }
}

/// How long the test waits for the client's answer to one command: its own
/// socket timeout plus room.
const ANSWER: Duration = Duration::from_secs(5);

/// A `pxt-udp-client` process inside a pod's namespace, driven line by line
/// (`connect ADDR`, `ask`); each answer is `ok [WORDS]` or `err KIND MESSAGE`.
pub struct PodUdpClient {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl PodUdpClient {
    /// Starts `client_bin` (the path of `pxt-udp-client`) in `pod`.
    pub fn start(client_bin: &Path, pod: &PodNetns, timeout: Duration) -> Result<Self, Error> {
        let net = format!("--net={}", pod.netns_path().display());
        let mut child = Command::new("nsenter")
            .arg(&net)
            .arg("--")
            .arg(client_bin)
            .arg(timeout.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                command: format!("nsenter {net} -- {}", client_bin.display()),
                source,
            })?;
        let stdin = child.stdin.take().expect("stdin was piped");
        let stdout = child.stdout.take().expect("stdout was piped");
        let (tx, answers) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(PodUdpClient {
            child,
            stdin,
            answers,
        })
    }

    fn command(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.stdin, "{line}")
            .map_err(|e| format!("writing {line:?} to the client: {e}"))?;
        let answer = self
            .answers
            .recv_timeout(ANSWER)
            .map_err(|e| format!("no answer to {line:?} from the client: {e}"))?;
        match answer.split_once(' ').unwrap_or((answer.as_str(), "")) {
            ("ok", rest) => Ok(rest.to_owned()),
            _ => Err(answer),
        }
    }

    /// A fresh connected socket to `addr` (the previous one is closed).
    pub fn connect(&mut self, addr: SocketAddr) -> Result<(), String> {
        self.command(&format!("connect {addr}")).map(drop)
    }

    /// One request on the connected socket: the backend that answered, or the
    /// client's `err KIND MESSAGE` line.
    pub fn ask(&mut self) -> Result<String, String> {
        self.command("ask")
    }
}

impl Drop for PodUdpClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
