//! The sandbox's isolation and limits, proven by running code that tries to cross them:
//! non-root, read-only root, no network, fresh state per call, time, memory and output limits.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{assert_no_containers, containers_of, run, sandbox, sandbox_with};
use mcp_python_executor::sandbox::{ExecutionRequest, SandboxError};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn code_runs_as_an_unprivileged_user_without_capabilities() {
    let sandbox = sandbox();
    // gVisor's /proc has no NoNewPrivs line; where it exists it must be 1.
    let code = "import os\nprint(os.getuid(), os.getgid())\n\
                print([l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1])\n\
                print(([l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs')] or ['absent'])[0])";
    let result = run(&sandbox, code).await;
    let no_new_privs = if common::gvisor() && result.stdout.ends_with("absent\n") {
        "absent"
    } else {
        "1"
    };
    let mut lines = result.stdout.lines();
    let ids: Vec<u32> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(|id| id.parse().unwrap())
        .collect();
    assert!(
        ids.len() == 2 && ids[0] == ids[1] && common::is_call_uid(ids[0]),
        "{result:?}"
    );
    let rest: Vec<&str> = lines.collect();
    assert_eq!(
        rest,
        ["0000000000000000", no_new_privs],
        "{}",
        result.stderr
    );
}

#[tokio::test]
async fn the_root_filesystem_is_read_only_and_tmp_is_writable() {
    let sandbox = sandbox();
    let code = "try:\n    open('/usr/evil', 'w')\nexcept OSError as e:\n    print('denied', e.errno)\n\
                open('/tmp/ok', 'w').write('x')\nprint('tmp ok')";
    let result = run(&sandbox, code).await;
    // 30 is EROFS: refused by the filesystem, not by permissions.
    // gVisor checks permissions before the read-only mount, so it answers EACCES (13).
    let errno = if common::gvisor() { "13" } else { "30" };
    assert_eq!(
        result.stdout,
        format!("denied {errno}\ntmp ok\n"),
        "{}",
        result.stderr
    );
}

#[tokio::test]
async fn there_is_no_network() {
    let sandbox = sandbox();
    let code = "import socket, os\nprint(sorted(os.listdir('/sys/class/net')))\n\
                for target in [('1.1.1.1', 53), ('172.17.0.1', 2375)]:\n\
                \x20   try:\n\
                \x20       socket.create_connection(target, timeout=3)\n\
                \x20       print('connected', target)\n\
                \x20   except OSError as e:\n\
                \x20       print('unreachable')\n\
                try:\n    socket.getaddrinfo('pypi.org', 443)\n    print('resolved')\nexcept OSError:\n    print('no dns')";
    let result = run(&sandbox, code).await;
    assert_eq!(
        result.stdout, "['lo']\nunreachable\nunreachable\nno dns\n",
        "{}",
        result.stderr
    );
}

#[tokio::test]
async fn each_call_starts_from_a_fresh_container() {
    let sandbox = sandbox();
    let first = run(
        &sandbox,
        "open('/tmp/state', 'w').write('1')\nimport socket\nprint(socket.gethostname())",
    )
    .await;
    assert_eq!(first.exit_code, 0, "{}", first.stderr);
    let second = run(&sandbox, "import os\nprint(os.path.exists('/tmp/state'))").await;
    assert_eq!(second.stdout, "False\n");
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn timeout_kills_the_container_and_reports_it() {
    let sandbox = sandbox_with(&["--timeout", "2"]);
    let code = "import time\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.1)";
    let result = run(&sandbox, code).await;
    assert!(result.timed_out, "{result:?}");
    assert!(result.failed());
    assert_eq!(result.exit_code, 137);
    assert_eq!(result.stdout, "started\n", "output before the kill is kept");
    assert!(result.duration_ms >= 2000);
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn a_memory_hog_is_killed_and_flagged() {
    let sandbox = sandbox_with(&["--memory", "64m"]);
    let result = run(
        &sandbox,
        "print('start', flush=True)\nx = b'x' * (512 << 20)\nprint('survived')",
    )
    .await;
    // gVisor kills the sandbox at its limit without Docker seeing an OOM event.
    assert!(result.oom_killed || common::gvisor(), "result: {result:?}");
    assert_eq!(result.exit_code, 137);
    assert!(!result.timed_out);
    assert_eq!(result.stdout, "start\n");
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn output_is_capped_with_a_visible_marker() {
    let sandbox = sandbox_with(&["--max-output", "1k"]);
    let result = run(
        &sandbox,
        "import sys\nprint('x' * 100_000)\nprint('y' * 5000, file=sys.stderr)",
    )
    .await;
    assert!(result.truncated);
    assert_eq!(
        result.exit_code, 0,
        "a capped program still finishes normally"
    );
    // The first and the last half of the cap are kept, with one marker counting the middle.
    let head = format!("{}\n[... ", "x".repeat(512));
    assert!(result.stdout.starts_with(&head), "{}", result.stdout);
    assert!(
        result
            .stdout
            .ends_with(&format!("...]\n{}\n", "x".repeat(511)))
    );
    assert!(result.stdout.contains(" 98977 bytes "), "{}", result.stdout);
    assert!(result.stderr.starts_with(&"y".repeat(512)));
    assert!(result.stderr.contains(" 3977 bytes "), "{}", result.stderr);
    assert!(result.stderr.ends_with(&format!("{}\n", "y".repeat(511))));
}

#[tokio::test]
async fn the_process_limit_stops_a_fork_loop() {
    if common::gvisor() {
        // runsc's own threads count against the limit: 32 cannot even start it, and at the
        // limit the whole sandbox dies (the attack corpus checks that the call fails).
        return;
    }
    let sandbox = sandbox_with(&["--pids", "32"]);
    let code = "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('limited', n < 32)";
    let result = run(&sandbox, code).await;
    assert_eq!(result.stdout, "limited True\n", "{}", result.stderr);
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn concurrent_calls_queue_and_all_complete() {
    let sandbox = Arc::new(sandbox_with(&["--concurrency", "2"]));
    let calls = (0..6).map(|i| {
        let sandbox = sandbox.clone();
        tokio::spawn(async move {
            let code = format!("import time\ntime.sleep(0.2)\nprint({i} * {i})");
            run(&sandbox, &code).await
        })
    });
    let results = futures::future::join_all(calls).await;
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(result.unwrap().stdout, format!("{}\n", i * i));
    }
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn a_cancelled_call_removes_its_container_at_once() {
    let sandbox = Arc::new(sandbox());
    let cancel = CancellationToken::new();
    let call = {
        let (sandbox, cancel) = (sandbox.clone(), cancel.clone());
        tokio::spawn(async move {
            let request = ExecutionRequest::new("import time\ntime.sleep(60)");
            sandbox.execute(&request, &cancel).await
        })
    };
    // Wait until the container exists, then cancel.
    for _ in 0..100 {
        if !containers_of(&sandbox).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(containers_of(&sandbox).await.len(), 1);
    cancel.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(outcome, Err(SandboxError::Cancelled)),
        "{outcome:?}"
    );
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn a_dropped_call_still_removes_its_container() {
    let sandbox = Arc::new(sandbox());
    let call = {
        let sandbox = sandbox.clone();
        tokio::spawn(async move {
            let request = ExecutionRequest::new("import time\ntime.sleep(60)");
            sandbox.execute(&request, &CancellationToken::new()).await
        })
    };
    for _ in 0..100 {
        if !containers_of(&sandbox).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    call.abort();
    // Dropping the future hands removal to the guard; shutdown waits for it.
    sandbox.shutdown(Duration::from_secs(15)).await;
    assert_no_containers(&sandbox).await;
}
