//! Remote Docker over TLS, reached as the Docker CLI reaches it: the test starts a second
//! `dockerd` on 127.0.0.1 with certificates it makes (and its own data-root, exec-root and
//! pidfile, so the machine's daemon is untouched), then points the built binary at it with
//! `DOCKER_HOST=tcp://…`, `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`. A client certificate from
//! another CA, and a daemon whose certificate this client does not trust, are refused with a
//! clear error. Needs root (it starts a daemon): `make test-engines` runs it, not `make test`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A throwaway TLS daemon and the certificate folders a client may use with it.
struct TlsDaemon {
    child: Child,
    dir: PathBuf,
    host: String,
    /// The bridge made for it, removed with it.
    bridge: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let done = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        done.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&done.stderr)
    );
}

/// A CA in `dir/<ca>-ca.pem` (+ key).
fn make_ca(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={ca}"),
            "-keyout",
            &format!("{ca}-ca-key.pem"),
            "-out",
            &format!("{ca}-ca.pem"),
        ],
    );
}

/// A certificate for `name` signed by `ca`, for `usage` (serverAuth or clientAuth).
fn make_cert(dir: &Path, ca: &str, name: &str, usage: &str) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca-key.pem"),
            "-CAcreateserial",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}-cert.pem"),
        ],
    );
}

/// A `DOCKER_CERT_PATH` folder: `ca.pem` (whom the client trusts), `cert.pem` and `key.pem`.
fn client_folder(dir: &Path, folder: &str, trusted_ca: &str, client: &str) -> PathBuf {
    let path = dir.join(folder);
    std::fs::create_dir_all(&path).unwrap();
    for (from, to) in [
        (format!("{trusted_ca}-ca.pem"), "ca.pem"),
        (format!("{client}-cert.pem"), "cert.pem"),
        (format!("{client}-key.pem"), "key.pem"),
    ] {
        std::fs::copy(dir.join(from), path.join(to)).unwrap();
    }
    path
}

impl TlsDaemon {
    fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("pyexec-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        make_ca(&dir, "good");
        make_ca(&dir, "other");
        make_cert(&dir, "good", "server", "serverAuth");
        make_cert(&dir, "good", "client", "clientAuth");
        make_cert(&dir, "other", "stranger", "clientAuth");
        client_folder(&dir, "client", "good", "client");
        client_folder(&dir, "stranger", "good", "stranger");
        client_folder(&dir, "distrustful", "other", "client");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("tcp://127.0.0.1:{port}");
        // A bridge of its own: `--bridge none` would make it delete the machine daemon's
        // docker0, and the default would share it. Executions use no network anyway.
        let bridge = format!("pxtls{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let made = Command::new("ip")
            .args(["link", "add", &bridge, "type", "bridge"])
            .status()
            .expect("ip runs");
        assert!(
            made.success(),
            "cannot add bridge {bridge} (the test needs root)"
        );
        // Its own (empty) configuration: not the machine daemon's.
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .args(["--tlsverify", "--tlscacert", "good-ca.pem"])
            .args(["--tlscert", "server-cert.pem", "--tlskey", "server-key.pem"])
            .args(["-H", &host])
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .args(["--bridge", &bridge, "--iptables=false", "--ip-masq=false"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd starts (the test needs root and Docker installed)");
        let daemon = TlsDaemon {
            child,
            dir,
            host,
            bridge,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while daemon.docker(&["version"]).status.code() != Some(0) {
            assert!(
                Instant::now() < deadline,
                "the TLS dockerd did not answer within 60 s: {}",
                std::fs::read_to_string(daemon.dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        // The image, from the machine's own daemon (no registry here).
        let image = "mcp-python-executor/base:latest";
        let mut saved = Command::new("docker")
            .args(["save", image])
            .env_remove("DOCKER_HOST")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let loaded = daemon
            .docker_command(&["load"])
            .stdin(saved.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(saved.wait().unwrap().success(), "docker save {image}");
        assert!(loaded.status.success(), "{loaded:?}");
        daemon
    }

    /// The Docker CLI against this daemon, as the good client.
    fn docker_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", self.dir.join("client"));
        command
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        self.docker_command(args).output().unwrap()
    }

    /// `mcp-python-executor exec` of `code` against this daemon with the client folder
    /// `folder` (and its certificates), cold.
    fn exec(&self, folder: &str, code: &str) -> std::process::Output {
        let certs = self.dir.join(folder);
        common::exec_with_stdin(
            &["--pool-size", "0"],
            code,
            &[
                ("DOCKER_HOST", self.host.as_str()),
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CERT_PATH", certs.to_str().unwrap()),
                ("RUST_LOG", "off"),
            ],
        )
    }
}

impl Drop for TlsDaemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the machine daemon's bridge exists (it must survive the second daemon).
fn docker0() -> bool {
    Path::new("/sys/class/net/docker0").exists()
}

#[test]
fn remote_docker_over_tls_runs_code_and_refuses_wrong_certificates() {
    let had_docker0 = docker0();
    let daemon = TlsDaemon::start();
    let ran = daemon.exec(
        "client",
        "import os\nprint('remote', os.getuid() >= 1500000000)\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "remote True\n",
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(ran.status.code(), Some(0));
    // Nothing of ours is left on the remote daemon.
    let left = daemon.docker(&["ps", "-aq", "--filter", "label=mcp-python-executor"]);
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "");

    // A client certificate the daemon's CA did not sign, and a daemon this client's CA did not
    // sign: both end before any container, with the tool's status and a clear error.
    for folder in ["stranger", "distrustful"] {
        let refused = daemon.exec(folder, "print('must not run')\n");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(125), "{folder}: {stderr}");
        assert!(refused.stdout.is_empty(), "{folder}");
        assert!(
            stderr.contains(&format!("cannot reach Docker at {}", daemon.host)),
            "{folder}: {stderr}"
        );
        assert!(stderr.contains("hint:"), "{folder}: {stderr}");
    }
    drop(daemon);
    assert_eq!(
        docker0(),
        had_docker0,
        "the machine daemon's docker0 is untouched"
    );
}
