//! `DOCKER_HOST=ssh://USER@HOST:PORT`, reached as the Docker CLI reaches it: the test starts
//! its own `sshd` on 127.0.0.1 (its own host key, authorized key, pidfile; the machine's ssh
//! setup untouched) whose `docker` is this machine's, and gives the server an `ssh` that reads
//! the test's client config (key, known hosts). Code runs there; a key the host does not know,
//! and a host whose key the client does not know, are refused with ssh's own reason; a URL that
//! would smuggle an option into ssh runs nothing. Needs root and openssh-server: `make
//! test-engines` runs it (not `make test`), after tests/prereqs.sh has checked for both.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A throwaway sshd and the client files the server's ssh uses.
struct Sshd {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn keygen(path: &Path) {
    let done = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(done.success());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sshd {
    fn start() -> Sshd {
        let dir =
            std::env::temp_dir().join(format!("pyexec-sshd.{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        keygen(&dir.join("host_key"));
        keygen(&dir.join("client_key"));
        keygen(&dir.join("stranger_key"));
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 AuthorizedKeysFile {d}/authorized_keys\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect(
                "sshd starts (apt-get install openssh-server; make test-engines checks for it)",
            );
        let host_key = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        std::fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")),
        )
        .unwrap();
        std::fs::write(dir.join("empty_known_hosts"), "").unwrap();
        let sshd = Sshd { child, dir, port };
        sshd.client("client_key", "known_hosts");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let probe = Command::new(sshd.dir.join("bin/ssh"))
                .args([
                    "-o",
                    "ConnectTimeout=1",
                    "-p",
                    &port.to_string(),
                    "root@127.0.0.1",
                    "true",
                ])
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if probe.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not come up: {}",
                std::fs::read_to_string(sshd.dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        sshd
    }

    /// Points the test's `ssh` (first on the server's PATH) at a client key and known hosts.
    fn client(&self, key: &str, known_hosts: &str) {
        let d = self.dir.display();
        std::fs::write(
            self.dir.join("ssh_config"),
            format!(
                "Host *\n  IdentityFile {d}/{key}\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {d}/{known_hosts}\n  GlobalKnownHostsFile /dev/null\n  \
                 StrictHostKeyChecking yes\n"
            ),
        )
        .unwrap();
        let wrapper = self.dir.join("bin/ssh");
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec /usr/bin/ssh -F {d}/ssh_config \"$@\"\n"),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn url(&self) -> String {
        format!("ssh://root@127.0.0.1:{}", self.port)
    }

    /// Runs `code` with the binary, DOCKER_HOST set to `host`, the test's ssh first on PATH.
    fn exec(&self, host: &str, code: &str) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        common::exec_with_stdin(&["-"], code, &[("DOCKER_HOST", host), ("PATH", &path)])
    }
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn code_runs_over_ssh_and_a_wrong_key_or_unknown_host_is_refused_with_ssh_s_reason() {
    let sshd = Sshd::start();

    let ran = sshd.exec(
        &sshd.url(),
        "import os; print('over ssh', os.getuid() >= 1500000000)",
    );
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "over ssh True\n");
    // No ssh of ours outlives the server (each ends when its stdin closes).
    let ours = format!("-p {} -- 127.0.0.1 docker system dial-stdio", sshd.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = Command::new("pgrep").args(["-f", &ours]).output().unwrap();
        if String::from_utf8_lossy(&left.stdout).trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ssh processes left: {:?}",
            left.stdout
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A key the host never authorized.
    sshd.client("stranger_key", "known_hosts");
    let refused = sshd.exec(&sshd.url(), "print('never')");
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(125), "{said}");
    assert!(
        said.contains("over ssh (") && said.contains("Permission denied"),
        "{said}"
    );
    assert!(
        said.contains("hint: `ssh [-p PORT] [USER@]HOST docker system dial-stdio`"),
        "{said}"
    );
    assert!(!said.contains("never\n"), "{said}");

    // A host whose key this client has never seen: refused, not trusted on first use.
    sshd.client("client_key", "empty_known_hosts");
    let refused = sshd.exec(&sshd.url(), "print('never')");
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(125), "{said}");
    assert!(said.contains("Host key verification failed"), "{said}");
    assert_eq!(
        std::fs::read_to_string(sshd.dir.join("empty_known_hosts")).unwrap(),
        "",
        "the unknown host was not added"
    );
}

/// A DOCKER_HOST that would hand ssh an option (here a ProxyCommand that leaves a mark) is
/// refused before ssh runs.
#[test]
fn an_ssh_url_smuggling_an_option_runs_nothing() {
    let sshd = Sshd::start();
    let mark = sshd.dir.join("pwned");
    let script = sshd.dir.join("proxy.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntouch {}\n", mark.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    for host in [
        format!("ssh://-oProxyCommand={}", script.display()),
        format!("ssh://-oProxyCommand={}@127.0.0.1", script.display()),
    ] {
        let refused = sshd.exec(&host, "print('never')");
        let said = text(&refused);
        assert_eq!(refused.status.code(), Some(125), "{said}");
        assert!(
            said.contains("is not an ssh:// URL this server can use"),
            "{said}"
        );
        assert!(
            !mark.exists(),
            "ssh ran the smuggled ProxyCommand for {host}"
        );
    }
}
