//! The attack corpus: code that tries to break out, exhaust the machine, or outlive its call.
//! Each test asserts the safe outcome, that the next call still works, and that no labelled
//! container remains. Run again under gVisor with PYEXEC_RUNTIME=runsc (`make test-gvisor`).

mod common;

use std::sync::Arc;

use common::{assert_still_serving, gvisor, run, sandbox, sandbox_with, try_run};
use mcp_python_executor::sandbox::ExecutionRequest;

// ---- resource exhaustion -------------------------------------------------------------

#[tokio::test]
async fn a_fork_bomb_hits_the_process_limit() {
    let sandbox = sandbox_with(&["--timeout", "10"]);
    let code =
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass";
    let result = run(&sandbox, code).await;
    assert!(result.failed(), "{result:?}");
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn a_memory_bomb_in_the_main_process_is_killed() {
    let sandbox = sandbox_with(&["--memory", "128m"]);
    let result = run(
        &sandbox,
        "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 << 20))",
    )
    .await;
    assert!(result.failed(), "{result:?}");
    assert!(
        result.oom_killed || result.stderr.contains("MemoryError"),
        "{result:?}"
    );
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn a_memory_bomb_in_a_child_process_is_killed() {
    let sandbox = sandbox_with(&["--memory", "128m"]);
    let code = "import subprocess, sys\n\
                child = subprocess.run([sys.executable, '-c', 'x = b\"x\" * (1 << 30)'])\n\
                print('child exit', child.returncode)";
    let result = run(&sandbox, code).await;
    if gvisor() {
        // gVisor's memory limit covers the sandbox as a whole: the call may die with the
        // child, by gVisor's own OOM killer, which Docker does not always flag (SECURITY.md).
        let killed = result.exit_code == 137 && !result.timed_out;
        assert!(
            result.oom_killed || killed || result.stdout.starts_with("child exit"),
            "{result:?}"
        );
    } else {
        // The child dies (SIGKILL from the OOM killer, or MemoryError); the parent survives.
        assert!(
            result.stdout.starts_with("child exit -9") || result.stdout.starts_with("child exit 1"),
            "{result:?}"
        );
    }
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn filling_tmp_and_dev_shm_stops_at_their_size() {
    let sandbox = sandbox_with(&["--tmp-size", "16m", "--memory", "256m"]);
    let code = "import errno\nfor path in ['/tmp/fill', '/dev/shm/fill']:\n\
                \x20   written = 0\n\
                \x20   try:\n\
                \x20       with open(path, 'wb') as f:\n\
                \x20           while written < (64 << 20):\n\
                \x20               f.write(b'x' * (1 << 20)); f.flush(); written += 1 << 20\n\
                \x20       print(path, 'unbounded')\n\
                \x20   except OSError as e:\n\
                \x20       print(path, 'stopped', written <= (16 << 20))";
    let result = run(&sandbox, code).await;
    assert_eq!(
        result.stdout, "/tmp/fill stopped True\n/dev/shm/fill stopped True\n",
        "{result:?}"
    );
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn writes_to_the_root_filesystem_are_refused() {
    let sandbox = sandbox();
    let code = "import os\nfor path in ['/etc/passwd', '/opt/venv/bin/python3', '/usr/lib/evil.so', '/home/sandbox/x']:\n\
                \x20   try:\n\
                \x20       open(path, 'ab').close()\n\
                \x20       print(path, 'WRITABLE')\n\
                \x20   except OSError as e:\n\
                \x20       print(path, 'refused')";
    let result = run(&sandbox, code).await;
    assert!(!result.stdout.contains("WRITABLE"), "{result:?}");
    assert_eq!(result.stdout.matches("refused").count(), 4, "{result:?}");
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn a_file_past_the_size_limit_cannot_be_written() {
    let sandbox = sandbox_with(&["--tmp-size", "8m"]);
    let code = "import signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n\
                try:\n    open('/tmp/big', 'wb').write(b'x' * (9 << 20))\n    print('WROTE')\n\
                except OSError as e:\n    print('refused')";
    let result = run(&sandbox, code).await;
    assert_eq!(result.stdout, "refused\n", "{result:?}");
    assert_still_serving(&sandbox).await;
}

// ---- time ---------------------------------------------------------------------------

#[tokio::test]
async fn a_busy_loop_is_killed_at_the_timeout() {
    let sandbox = sandbox_with(&["--timeout", "2"]);
    let result = run(&sandbox, "while True:\n    pass").await;
    assert!(result.timed_out, "{result:?}");
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn a_program_that_ignores_sigterm_still_dies() {
    let sandbox = sandbox_with(&["--timeout", "2"]);
    let code = "import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n\
                \x20   signal.signal(s, signal.SIG_IGN)\nprint('ignoring', flush=True)\ntime.sleep(600)";
    let result = run(&sandbox, code).await;
    assert!(result.timed_out, "{result:?}");
    assert_eq!(result.stdout, "ignoring\n");
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn background_and_double_forked_processes_die_with_the_call() {
    let sandbox = sandbox_with(&["--timeout", "20"]);
    let code = "import os, subprocess, time\n\
                subprocess.Popen(['sleep', '600'])\n\
                subprocess.Popen(['sleep', '600'], start_new_session=True)\n\
                if os.fork() == 0:\n\
                \x20   os.setsid()\n\
                \x20   if os.fork() == 0:\n\
                \x20       time.sleep(600)\n\
                \x20   os._exit(0)\n\
                print('main done', flush=True)";
    let result = run(&sandbox, code).await;
    // The call ends with its main program, not when the orphans would.
    assert_eq!(result.exit_code, 0, "{result:?}");
    assert!(!result.timed_out, "orphans kept the call alive: {result:?}");
    assert_eq!(result.stdout, "main done\n");
    assert_still_serving(&sandbox).await;
}

// ---- output floods ------------------------------------------------------------------

async fn flood(code: &str) -> (mcp_python_executor::sandbox::ExecutionResult, u64) {
    // Under gVisor (ptrace platform) every syscall costs ~30 us: the gigabyte's million
    // writes take ~70 s alone and over 120 s beside other tests on 2 cores.
    let timeout = if gvisor() { "300" } else { "120" };
    let sandbox = sandbox_with(&["--timeout", timeout]);
    let before = common::rss_bytes();
    let result = run(&sandbox, code).await;
    let growth = common::rss_bytes().saturating_sub(before);
    assert_still_serving(&sandbox).await;
    (result, growth)
}

/// The server keeps at most 1 MiB per stream; allow generous slack for allocator noise.
const FLAT: u64 = 48 << 20;

#[tokio::test]
async fn a_gigabyte_to_stdout_is_capped_and_memory_stays_flat() {
    let code = "import sys\nline = b'y' * 1023 + b'\\n'\nw = sys.stdout.buffer.write\nfor _ in range(1 << 20):\n    w(line)";
    let (result, growth) = flood(code).await;
    assert!(result.truncated);
    assert_eq!(result.exit_code, 0, "{result:?}");
    // The head and the tail are kept, with the middle counted.
    assert!(
        result.stdout.ends_with(&format!("{}\n", "y".repeat(1023))),
        "{}",
        &result.stdout[result.stdout.len() - 100..]
    );
    let omitted = result.stdout.omitted().expect("a marker");
    assert!(omitted.bytes >= (1 << 30) - (1 << 20) && omitted.bytes < 1 << 30);
    assert!(omitted.lines >= (1 << 20) - 1024, "{omitted:?}");
    assert!(growth < FLAT, "server memory grew by {} MiB", growth >> 20);
}

#[tokio::test]
async fn a_flood_to_stderr_only_without_newlines_is_capped() {
    let code = "import sys\nblock = b'z' * (1 << 20)\nfor _ in range(256):\n    sys.stderr.buffer.write(block)";
    let (result, growth) = flood(code).await;
    assert!(result.truncated);
    assert_eq!(result.stdout, "");
    assert!(result.stderr.ends_with('z'));
    let omitted = result.stderr.omitted().expect("a marker");
    assert_eq!((omitted.bytes, omitted.lines), ((256 << 20) - (1 << 20), 0));
    assert!(growth < FLAT, "server memory grew by {} MiB", growth >> 20);
}

#[tokio::test]
async fn binary_garbage_becomes_valid_text() {
    let code =
        "import os, sys\nfor _ in range(64):\n    sys.stdout.buffer.write(os.urandom(1 << 16))";
    let (result, _) = flood(code).await;
    assert!(result.truncated || result.stdout.len() > 1000);
    // It is a Rust String, so valid UTF-8 by construction; make sure it serializes as JSON.
    serde_json::to_string(&result.stdout).unwrap();
}

#[tokio::test]
async fn a_multibyte_character_cut_at_the_cap_is_dropped_whole() {
    let sandbox = sandbox_with(&["--max-output", "1k"]);
    // The head (512 bytes) ends inside the first 4-byte emoji, the tail (the last 512) starts
    // inside the eleventh.
    let result = run(
        &sandbox,
        "print('a' * 511 + '🐍' * 10 + 'b' * 600 + '🐍' * 10 + 'c' * 472)",
    )
    .await;
    assert!(result.truncated);
    let kept = result.stdout.lines().next().unwrap();
    assert_eq!(kept, "a".repeat(511), "{kept:?}");
    let tail = result.stdout.lines().last().unwrap();
    assert_eq!(tail, format!("{}{}", "🐍".repeat(9), "c".repeat(472)));
    assert!(!result.stdout.contains('\u{fffd}'));
    assert_still_serving(&sandbox).await;
}

// ---- network ------------------------------------------------------------------------

#[tokio::test]
async fn no_network_path_is_open() {
    let sandbox = sandbox();
    // With network none there is no interface but loopback, so nothing below sends a packet.
    let code = "import socket, urllib.request\n\
                def attempt(name, f):\n\
                \x20   try:\n\
                \x20       f()\n\
                \x20       print(name, 'OPEN')\n\
                \x20   except Exception:\n\
                \x20       print(name, 'closed')\n\
                attempt('http', lambda: urllib.request.urlopen('http://example.com', timeout=3))\n\
                attempt('ip', lambda: socket.create_connection(('93.184.216.34', 80), timeout=3))\n\
                attempt('dns', lambda: socket.getaddrinfo('example.com', 80))\n\
                attempt('metadata', lambda: socket.create_connection(('169.254.169.254', 80), timeout=3))\n\
                attempt('docker-host', lambda: socket.create_connection(('172.17.0.1', 2375), timeout=3))\n\
                attempt('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('8.8.8.8', 53)))\n\
                attempt('raw', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))";
    let result = run(&sandbox, code).await;
    assert!(!result.stdout.contains("OPEN"), "{result:?}");
    assert_eq!(result.stdout.matches("closed").count(), 7, "{result:?}");
    assert_still_serving(&sandbox).await;
}

// ---- host exposure ------------------------------------------------------------------

#[tokio::test]
async fn the_host_is_not_exposed() {
    // Docker adds HOSTNAME; nothing of the server's own environment may reach the code.
    let sandbox = sandbox();
    let code = "import os\n\
                print('socket', os.path.exists('/var/run/docker.sock') or os.path.exists('/run/docker.sock'))\n\
                print('env', sorted(os.environ))\n\
                try:\n    print('init env', len(open('/proc/1/environ','rb').read()) > 0)\nexcept OSError:\n    print('init env unreadable')\n\
                caps = {l.split(':')[0]: l.split()[1] for l in open('/proc/self/status') if l.startswith('Cap')}\n\
                print('caps', caps['CapEff'], caps['CapPrm'], caps['CapBnd'])\n\
                print('host dirs', [p for p in ['/work', '/root/.cargo', '/etc/docker', '/var/lib/docker'] if os.path.exists(p)])";
    let result = run(&sandbox, code).await;
    let lines: Vec<&str> = result.stdout.lines().collect();
    assert_eq!(lines[0], "socket False", "{result:?}");
    let mut expected = vec![
        "HOME",
        "HOSTNAME",
        "LANG",
        "LOGNAME",
        "MPLBACKEND",
        "MPLCONFIGDIR",
        "PATH",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "USER",
    ];
    if sandbox.config().egress.is_some() {
        // With an allowlist (PYEXEC_ALLOW_HOSTS), the proxy's variables, and nothing more.
        for proxy in ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"] {
            expected.push(proxy);
        }
        for proxy in ["all_proxy", "http_proxy", "https_proxy", "no_proxy"] {
            expected.push(proxy);
        }
    }
    expected.sort();
    assert_eq!(
        lines[1],
        format!("env {expected:?}").replace('"', "'"),
        "only the explicit environment reaches the code"
    );
    assert!(
        lines[2] == "init env unreadable" || lines[2] == "init env True",
        "{lines:?}"
    );
    assert_eq!(
        lines[3], "caps 0000000000000000 0000000000000000 0000000000000000",
        "{lines:?}"
    );
    assert_eq!(lines[4], "host dirs []", "{lines:?}");
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn setuid_tools_and_namespaces_give_no_privilege() {
    let sandbox = sandbox();
    let code = "import subprocess\n\
                for cmd in (['su', '-c', 'id -u'], ['unshare', '-r', 'sh', '-c', 'touch /etc/evil'], ['mount', '-t', 'tmpfs', 'x', '/mnt'], ['chroot', '/', 'true']):\n\
                \x20   try:\n\
                \x20       r = subprocess.run(cmd, capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL)\n\
                \x20       print(cmd[0], 'ok' if r.returncode == 0 else 'denied', r.stdout.strip())\n\
                \x20   except (OSError, subprocess.TimeoutExpired):\n\
                \x20       print(cmd[0], 'denied')\n\
                import os\nprint('uid', os.getuid(), os.geteuid())";
    let result = run(&sandbox, code).await;
    for tool in ["su", "unshare", "mount", "chroot"] {
        assert!(
            result.stdout.contains(&format!("{tool} denied")),
            "{tool}: {result:?}"
        );
    }
    let ids = result.stdout.lines().last().unwrap_or_default();
    let ids: Vec<u32> = ids
        .split_whitespace()
        .skip(1)
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{result:?}");
    assert_eq!(ids[0], ids[1]);
    assert!(common::is_call_uid(ids[0]), "{result:?}");
    assert_still_serving(&sandbox).await;
}

// ---- forged status and shared identity ----------------------------------------------

#[tokio::test]
async fn a_monkeypatched_exit_path_still_answers_with_the_real_status() {
    let sandbox = sandbox();
    let code = "import os, sys\n\
                print('before', flush=True)\n\
                sys.stderr.write('kept\\n')\n\
                os.write = lambda f, b: len(b)\n\
                os._exit = lambda s: None\n\
                raise SystemExit(7)";
    let result = run(&sandbox, code).await;
    assert_eq!(result.exit_code, 7, "{result:?}");
    assert_eq!(result.stdout, "before\n");
    assert_eq!(result.stderr, "kept\n");
    assert_still_serving(&sandbox).await;
}

/// A program that looks for the trailer's token everywhere it can -- its own frames and
/// objects, every process's memory and environment through /proc, ptrace --, writes a
/// trailer claiming success with everything that looks like a token, and then fails.
const FORGER: &str = r#"
import ctypes, gc, os, re, sys
TOKEN = re.compile(rb"[0-9a-f]{32}")
candidates = set()
def consider(value):
    if isinstance(value, str):
        value = value.encode("utf-8", "replace")
    if isinstance(value, bytes):
        candidates.update(TOKEN.findall(value[: 1 << 20]))
frame = sys._getframe()
while frame is not None:
    for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
        consider(value)
    frame = frame.f_back
for obj in gc.get_objects():
    consider(obj)
libc = ctypes.CDLL(None, use_errno=True)
reached = []
for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
    if libc.ptrace(16, int(pid), 0, 0) == 0:  # PTRACE_ATTACH
        reached.append(("ptrace", pid))
        libc.ptrace(17, int(pid), 0, 0)  # PTRACE_DETACH
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            consider(f.read())
            reached.append(("environ", pid))
    except OSError:
        pass
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb")
        reached.append(("mem", pid))
    except OSError:
        continue
    for line in maps:
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if end - start > 64 << 20:
            continue
        try:
            mem.seek(start)
            candidates.update(TOKEN.findall(mem.read(end - start)))
        except (OSError, ValueError, OverflowError):
            pass
supervisor = str(os.getppid())
print("supervisor reached:", [r for r in reached if r[1] == supervisor], flush=True)
for token in candidates:
    for fd in (1, 2):
        os.write(fd, b"\x00pyexec-exit " + token + b" 0\n")
sys.stderr.write("still here after forging\n")
sys.exit(5)
"#;

#[tokio::test]
async fn a_program_cannot_forge_its_status_with_anything_it_can_reach() {
    let sandbox = sandbox();
    let result = run(&sandbox, FORGER).await;
    assert_eq!(result.exit_code, 5, "{result:?}");
    if gvisor() {
        // gVisor lets a process of the same uid read a non-dumpable one's environment (which
        // holds no secret: the token never is in it), not its memory and not by ptrace.
        let reached = result.stdout.lines().next().unwrap_or_default();
        assert!(
            !reached.contains("'mem'") && !reached.contains("'ptrace'"),
            "{result:?}"
        );
    } else {
        assert!(
            result.stdout.contains("supervisor reached: []"),
            "{result:?}"
        );
    }
    assert!(
        result.stderr.contains("still here after forging"),
        "{result:?}"
    );
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn the_supervisor_is_another_uid_the_program_cannot_open_read_or_signal() {
    let sandbox = sandbox();
    let result = run(&sandbox, common::SUPERVISOR_PROBE).await;
    assert_eq!(result.exit_code, 0, "{result:?}");
    common::assert_supervisor_out_of_reach(&result.stdout);
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn a_module_the_program_plants_in_tmp_never_runs_in_the_supervisor() {
    let sandbox = sandbox();
    let result = run(&sandbox, common::PLANTER).await;
    assert_eq!(result.exit_code, 0, "{result:?}");
    assert_eq!(result.stdout, "own module: 42\n", "{result:?}");
    assert!(!result.stderr.contains("HIJACKED"), "{}", result.stderr);
    assert_eq!(
        result
            .returned
            .files
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["result.txt"],
        "the supervisor collected the file (and so imported json): {result:?}"
    );
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn calls_share_no_uid_so_per_user_kernel_limits_are_not_shared() {
    let sandbox = sandbox_with(&["--timeout", "20"]);
    // Holds every inotify instance its uid may (up to 2,000, in two processes of 1,000 each,
    // under the per-process file limit), and says how many that was and what the limit is:
    // each process in one write, since two `print`s (text, then newline) can interleave.
    let hog = "import ctypes, os, time\n\
               libc = ctypes.CDLL(None, use_errno=True)\n\
               try:\n\
               \x20   limit = int(open('/proc/sys/fs/inotify/max_user_instances').read())\n\
               except OSError:\n\
               \x20   limit = -1\n\
               pid = os.fork()\n\
               held = 0\n\
               for _ in range(1000):\n\
               \x20   if libc.inotify_init() < 0:\n\
               \x20       break\n\
               \x20   held += 1\n\
               os.write(1, f'held {held} limit {limit}\\n'.encode())\n\
               time.sleep(6)\n\
               if pid:\n\
               \x20   os.waitpid(pid, 0)";
    let probe = "import ctypes, os, time\n\
                 time.sleep(2)\n\
                 libc = ctypes.CDLL(None, use_errno=True)\n\
                 fd = libc.inotify_init()\n\
                 print('inotify', 'ok' if fd >= 0 else 'failed', os.getuid())";
    let (held, probed) = tokio::join!(run(&sandbox, hog), run(&sandbox, probe));
    let lines: Vec<Vec<&str>> = held
        .stdout
        .lines()
        .map(|l| l.split(' ').collect())
        .collect();
    assert_eq!(lines.len(), 2, "{held:?}");
    let total: i64 = lines.iter().map(|l| l[1].parse::<i64>().unwrap()).sum();
    let limit: i64 = lines[0][3].parse().unwrap();
    // Where the kernel enforces a per-user limit we can exhaust, the hog really holds all of
    // it, so the probe below is a real test (gVisor has its own accounting).
    if (1..=2000).contains(&limit) && !common::gvisor() {
        assert_eq!(total, limit, "the hog holds every instance: {held:?}");
    }
    assert!(
        probed.stdout.starts_with("inotify ok"),
        "{probed:?} while {held:?}"
    );
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn scratch_mounts_are_nosuid_nodev_and_nothing_is_setuid() {
    let sandbox = sandbox();
    let code = "import os, stat\n\
                mounts = {l.split()[1]: l.split()[3].split(',') for l in open('/proc/self/mounts')}\n\
                for m in ('/tmp', '/dev/shm'):\n\
                \x20   print(m, 'nosuid' in mounts[m], 'nodev' in mounts[m])\n\
                found = []\n\
                for root, dirs, files in os.walk('/'):\n\
                \x20   if root.startswith(('/proc', '/sys', '/dev')):\n\
                \x20       dirs[:] = []\n\
                \x20       continue\n\
                \x20   for name in files:\n\
                \x20       try:\n\
                \x20           mode = os.lstat(os.path.join(root, name)).st_mode\n\
                \x20       except OSError:\n\
                \x20           continue\n\
                \x20       if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):\n\
                \x20           found.append(os.path.join(root, name))\n\
                print('setuid', found)";
    let result = run(&sandbox, code).await;
    // gVisor's mount table does not show these flags (the container spec asks for them; see
    // `hardened_host_config`); the scan for setuid files holds under both.
    let expected = if gvisor() {
        "/tmp False False\n/dev/shm False False\nsetuid []\n"
    } else {
        "/tmp True True\n/dev/shm True True\nsetuid []\n"
    };
    assert_eq!(result.stdout, expected, "{result:?}");
    assert_still_serving(&sandbox).await;
}

// ---- bad requests -------------------------------------------------------------------

#[tokio::test]
async fn nul_bytes_in_code_and_input_are_handled() {
    let sandbox = sandbox();
    let result = run(&sandbox, "print('a')\0print('b')").await;
    assert_eq!(result.exit_code, 1);
    assert!(result.stderr.contains("null bytes"), "{result:?}");
    let request =
        ExecutionRequest::new("import sys\nprint(repr(sys.stdin.read()))").with_input(["a\0b"]);
    let result = try_run(&sandbox, request).await.unwrap();
    assert_eq!(result.stdout, "'a\\x00b\\n'\n", "{result:?}");
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn a_megabyte_of_code_and_100k_stdin_lines_work() {
    let sandbox = sandbox();
    let code = format!(
        "x = 0\n{}print(x)\nimport sys\nprint(sum(1 for _ in sys.stdin))",
        "x += 1\n".repeat(150_000)
    );
    assert!(code.len() > 1 << 20);
    let lines: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    let result = try_run(&sandbox, ExecutionRequest::new(code).with_input(lines))
        .await
        .unwrap();
    assert_eq!(result.stdout, "150000\n100000\n", "{}", result.stderr);
    assert_still_serving(&sandbox).await;
}

// ---- load ---------------------------------------------------------------------------

#[tokio::test]
async fn a_storm_of_100_calls_all_complete_with_no_leak() {
    // All 100 may wait here (the default queue of 64 is tested by the flood below): the
    // promise is that 4 slots serve them all, one container each, and none is left.
    let sandbox = Arc::new(sandbox_with(&["--concurrency", "4", "--max-queue", "128"]));
    let calls = (0..100).map(|i| {
        let sandbox = sandbox.clone();
        tokio::spawn(async move { run(&sandbox, &format!("print({i})")).await })
    });
    let results = futures::future::join_all(calls).await;
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(result.unwrap().stdout, format!("{i}\n"));
    }
    assert_still_serving(&sandbox).await;
}

#[tokio::test]
async fn a_flood_of_calls_past_the_queue_is_answered_busy_and_memory_stays_flat() {
    let sandbox = sandbox_with(&[
        "--concurrency",
        "2",
        "--max-queue",
        "64",
        // The count is what is tested here (64 calls of 1 MiB pass the default 64 MiB).
        "--max-queue-bytes",
        "1g",
        "--pool-size",
        "0",
    ]);
    // 1 MiB of code each: were payloads built before the wait, the 64 waiting calls would
    // hold 64 MiB of copies; the requests themselves are the test's own, made before `before`.
    let code = format!("import time\ntime.sleep(0.3)\n#{}", "x".repeat(1 << 20));
    let requests: Vec<ExecutionRequest> = (0..200).map(|_| ExecutionRequest::new(&code)).collect();
    let before = common::rss_bytes();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let calls = requests.iter().map(|request| {
        let (sandbox, peak) = (sandbox.clone(), peak.clone());
        async move {
            // Borrowed, not cloned: the only copies are the ones the sandbox makes.
            let result = sandbox
                .execute(request, &tokio_util::sync::CancellationToken::new())
                .await;
            peak.fetch_max(common::rss_bytes(), std::sync::atomic::Ordering::Relaxed);
            result
        }
    });
    let results = futures::future::join_all(calls).await;
    let busy = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(mcp_python_executor::sandbox::SandboxError::Busy { .. })
            )
        })
        .count();
    let ran = results
        .iter()
        .filter(|r| matches!(r, Ok(o) if o.exit_code == 0))
        .count();
    assert_eq!(busy + ran, 200, "{results:?}");
    // 2 run and 64 wait; the rest are turned away at once.
    assert!((130..=134).contains(&busy), "{busy} busy");
    let message = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .unwrap()
        .to_string();
    assert!(
        message.contains("busy") && message.contains("PYEXEC_MAX_QUEUE"),
        "{message}"
    );
    let grown = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    assert!(
        grown < 24 << 20,
        "server memory grew by {} MiB (64 waiting payloads would be 64 MiB)",
        grown >> 20
    );
    assert_still_serving(&sandbox).await;
}
