//! Where a test host lives, shared by `tests/egress_hosts.rs` and `tests/secrets.rs` so that the
//! two set it up the same way and, taking the same names and addresses, never collide: a network
//! namespace `pyexec-egK` with a veth pair (`pxegKh` here, `pxegKn` there), 10.251.K.1/30 on this
//! side and 10.251.K.2/30 on the other, so the host is reached by routing, not on this machine's
//! loopback; the servers that run in it and a folder for their files go with it. Also the command
//! that runs the server under test in a mount namespace of its own whose /etc/hosts is a file the
//! test writes. Needs root, `ip` and `unshare` (`make test-engines`); std only, since every test
//! that has `mod common;` compiles it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `ip` with these arguments, its stderr dropped: whether it succeeded.
fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn must(ok: bool, what: &str) {
    assert!(ok, "could not {what}");
}

/// A network namespace `pyexec-egK` with a veth pair to it, addressed and up (lo too), and a
/// folder for its files. When dropped, the servers started by [`Netns::serve`] are killed, the
/// namespace is deleted (its end of the pair with it) and the folder removed.
pub struct Netns {
    /// `pyexec-egK`.
    pub name: String,
    /// 10.251.K.2, the address in the namespace.
    pub addr: String,
    /// `pyexec-<label>K-<pid>` in the temporary folder, made empty.
    pub dir: PathBuf,
    servers: Vec<Child>,
}

impl Netns {
    /// Claims a free K and sets the namespace up, with its folder named after `label`.
    pub fn claim(label: &str) -> Self {
        // A free K: `ip netns add` fails when another test (of either file) or a crashed run
        // holds it.
        let first = std::process::id() % 200;
        let k = (0..200)
            .map(|i| (first + i) % 200 + 20)
            .find(|k| ip(&["netns", "add", &format!("pyexec-eg{k}")]))
            .expect("a free network namespace name");
        let dir = std::env::temp_dir().join(format!("pyexec-{label}{k}-{}", std::process::id()));
        // From here on, a failed step deletes the namespace as the test unwinds.
        let netns = Self {
            name: format!("pyexec-eg{k}"),
            addr: format!("10.251.{k}.2"),
            dir,
            servers: Vec::new(),
        };
        let ns = netns.name.as_str();
        let (here, there) = (format!("pxeg{k}h"), format!("pxeg{k}n"));
        let _ = ip(&["link", "del", &here]); // left by a crashed run
        must(
            ip(&[
                "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", ns,
            ]),
            "make a veth pair",
        );
        must(
            ip(&["addr", "add", &format!("10.251.{k}.1/30"), "dev", &here]),
            "address here",
        );
        must(ip(&["link", "set", &here, "up"]), "bring the link up");
        let with_prefix = format!("{}/30", netns.addr);
        must(
            ip(&["-n", ns, "addr", "add", &with_prefix, "dev", &there]),
            "address there",
        );
        must(
            ip(&["-n", ns, "link", "set", &there, "up"]),
            "bring the peer up",
        );
        must(ip(&["-n", ns, "link", "set", "lo", "up"]), "bring lo up");
        let _ = std::fs::remove_dir_all(&netns.dir);
        std::fs::create_dir_all(&netns.dir).unwrap();
        netns
    }

    /// Runs `python3 -c script ADDR args…` in the namespace and waits for its first line,
    /// which must be `serving`. It runs until the namespace is dropped.
    pub fn serve<I, S>(&mut self, script: &str, args: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut server = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "python3", "-c", script, &self.addr,
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = server.stdout.take().unwrap();
        self.servers.push(server);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        assert_eq!(line.trim(), "serving");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = ip(&["netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `program`, run in a mount namespace of its own (`unshare --mount`, private propagation)
/// where `hosts` is bind-mounted over /etc/hosts. Arguments added to the command go to
/// `program`.
pub fn with_hosts_file(hosts: &Path, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"")
        .arg("sh")
        .arg(hosts)
        .arg(program);
    command
}
