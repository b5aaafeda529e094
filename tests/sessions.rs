//! Sessions against real Docker (and, with `make test-gvisor`, under gVisor): state that
//! persists between calls, isolation from other sessions and from plain calls, the ends of a
//! session (exit, timeout, idle, age, close, limit), hostile ids, and nothing left behind.
mod common;

use std::time::Duration;

use common::{PLANTER, containers_of, is_call_uid, sandbox_with};
use mcp_python_executor::sandbox::{
    ExecutionRequest, Sandbox, SandboxError, SessionEnd, SessionOutcome,
};
use tokio_util::sync::CancellationToken;

async fn call(sandbox: &Sandbox, id: &str, code: &str) -> SessionOutcome {
    try_call(sandbox, id, ExecutionRequest::new(code))
        .await
        .unwrap_or_else(|e| panic!("session call failed: {e}"))
}

async fn try_call(
    sandbox: &Sandbox,
    id: &str,
    request: ExecutionRequest,
) -> Result<SessionOutcome, SandboxError> {
    sandbox
        .execute_in_session(id, None, &request, &CancellationToken::new(), &|_, _| {})
        .await
}

async fn open(sandbox: &Sandbox) -> String {
    sandbox
        .create_session(None, &CancellationToken::new())
        .await
        .expect("a session opens")
        .session_id
}

/// Waits (up to 20 s) until the sandbox has no container left: a session's container is
/// removed on a background task once the session ends.
async fn assert_all_removed(sandbox: &Sandbox) {
    for _ in 0..200 {
        if containers_of(sandbox).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("left behind: {:?}", containers_of(sandbox).await);
}

fn out(outcome: &SessionOutcome) -> String {
    outcome.result.stdout.to_string()
}

fn err(outcome: &SessionOutcome) -> String {
    outcome.result.stderr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_imports_functions_and_files_persist_between_calls() {
    let sandbox = sandbox_with(&["--pool-size", "0"]);
    let id = open(&sandbox).await;
    let first = call(
        &sandbox,
        &id,
        "import json\nrows = [1, 2, 3]\ndef total(): return sum(rows)\n\
         open('/tmp/data.txt', 'w').write('kept')\nprint('loaded')",
    )
    .await;
    assert_eq!(out(&first), "loaded\n", "{}", err(&first));
    let second = call(
        &sandbox,
        &id,
        "rows.append(4)\nprint(total(), json.dumps(rows), open('/tmp/data.txt').read())",
    )
    .await;
    assert_eq!(out(&second), "10 [1, 2, 3, 4] kept\n", "{}", err(&second));
    assert_eq!(second.ended, None);
    // One container for the whole session.
    assert_eq!(containers_of(&sandbox).await.len(), 1);
    sandbox.close_session(&id, None).unwrap();
    assert_all_removed(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_see_nothing_of_each_other_and_plain_calls_see_nothing_of_either() {
    let sandbox = sandbox_with(&["--pool-size", "0"]);
    let (a, b) = (open(&sandbox).await, open(&sandbox).await);
    let who = "import os\nprint(os.getuid())";
    call(
        &sandbox,
        &a,
        "secret = 'a'\nopen('/tmp/a.txt', 'w').write('a')",
    )
    .await;
    let seen = call(
        &sandbox,
        &b,
        "import os\nprint('secret' in globals(), os.path.exists('/tmp/a.txt'))",
    )
    .await;
    assert_eq!(out(&seen), "False False\n", "{}", err(&seen));
    let plain = common::run(
        &sandbox,
        "import os\nprint('secret' in globals(), os.path.exists('/tmp/a.txt'))",
    )
    .await;
    assert_eq!(plain.stdout.to_string(), "False False\n");
    // No uid is shared either (nor a /tmp: a.txt above): each session is a container of its
    // own.
    let (ua, ub) = (call(&sandbox, &a, who).await, call(&sandbox, &b, who).await);
    let plain = common::run(&sandbox, who).await.stdout.to_string();
    let fields = |s: String| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let (fa, fb, fp) = (fields(out(&ua)), fields(out(&ub)), fields(plain));
    for f in [&fa, &fb, &fp] {
        assert!(is_call_uid(f[0].parse().unwrap()), "{f:?}");
    }
    assert!(
        fa[0] != fb[0] && fa[0] != fp[0] && fb[0] != fp[0],
        "uids {fa:?} {fb:?} {fp:?}"
    );
    // Another session's id is as unknown to a different owner as a made-up one.
    let stolen = sandbox
        .execute_in_session(
            &a,
            Some("someone-else"),
            &ExecutionRequest::new("print(secret)"),
            &CancellationToken::new(),
            &|_, _| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(stolen, SandboxError::UnknownSession { .. }),
        "{stolen}"
    );
    assert!(sandbox.close_session(&a, Some("someone-else")).is_err());
    sandbox.close_session(&a, None).unwrap();
    sandbox.close_session(&b, None).unwrap();
    assert_all_removed(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_fails_the_call_not_the_session_and_tracebacks_show_earlier_calls() {
    let sandbox = sandbox_with(&["--pool-size", "0"]);
    let id = open(&sandbox).await;
    call(
        &sandbox,
        &id,
        "def explode():\n    raise ValueError('boom')\nx = 5",
    )
    .await;
    let failed = call(&sandbox, &id, "explode()").await;
    assert_eq!(failed.result.exit_code, 1);
    assert!(failed.result.failed() && failed.ended.is_none());
    let traceback = err(&failed);
    assert!(
        traceback.contains("<call 1>") && traceback.contains("raise ValueError('boom')"),
        "{traceback}"
    );
    assert!(
        !traceback.contains("runner"),
        "the runner's frames are not shown: {traceback}"
    );
    let syntax = call(&sandbox, &id, "def (:").await;
    assert!(err(&syntax).contains("SyntaxError") && syntax.ended.is_none());
    let after = call(&sandbox, &id, "print(x)").await;
    assert_eq!(out(&after), "5\n");
    sandbox.close_session(&id, None).unwrap();
    assert_all_removed(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_has_its_own_stdin_and_unread_input_never_reaches_the_next() {
    let sandbox = sandbox_with(&["--pool-size", "0"]);
    let id = open(&sandbox).await;
    let big = "y".repeat(200_000);
    let first = try_call(
        &sandbox,
        &id,
        ExecutionRequest::new("print(input())").with_input(["first", big.as_str()]),
    )
    .await
    .unwrap();
    assert_eq!(out(&first), "first\n");
    let second = try_call(
        &sandbox,
        &id,
        ExecutionRequest::new(
            "import sys\ndata = sys.stdin.read()\nprint(repr(data[:20]), len(data))",
        )
        .with_input(["second"]),
    )
    .await
    .unwrap();
    assert_eq!(out(&second), "'second\\n' 7\n", "{}", err(&second));
    let empty = call(&sandbox, &id, "import sys\nprint(repr(sys.stdin.read()))").await;
    assert_eq!(out(&empty), "''\n");
    sandbox.close_session(&id, None).unwrap();
    assert_all_removed(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_timeout_is_interrupted_and_the_session_keeps_its_state() {
    let sandbox = sandbox_with(&["--pool-size", "0", "--timeout", "2"]);
    let id = open(&sandbox).await;
    call(&sandbox, &id, "kept = 42").await;
    let slow = call(
        &sandbox,
        &id,
        "import time\nprint('start')\nwhile True: time.sleep(0.05)",
    )
    .await;
    assert!(slow.result.timed_out, "{slow:?}");
    assert_eq!(
        slow.ended, None,
        "the interpreter came back: the session goes on"
    );
    assert_eq!(slow.result.exit_code, 130);
    assert_eq!(out(&slow), "start\n");
    assert!(err(&slow).contains("KeyboardInterrupt"), "{}", err(&slow));
    let after = call(&sandbox, &id, "print(kept)").await;
    assert_eq!(out(&after), "42\n");
    sandbox.close_session(&id, None).unwrap();
    assert_all_removed(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_ignores_the_interrupt_is_killed_and_the_session_ends_with_its_container() {
    let sandbox = sandbox_with(&["--pool-size", "0", "--timeout", "2"]);
    let id = open(&sandbox).await;
    let stuck = call(
        &sandbox,
        &id,
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n\
         while True: time.sleep(0.05)",
    )
    .await;
    assert!(stuck.result.timed_out);
    assert_eq!(stuck.ended, Some(SessionEnd::TimedOut));
    assert_eq!(stuck.result.exit_code, 137);
    assert_all_removed(&sandbox).await;
    let gone = try_call(&sandbox, &id, ExecutionRequest::new("print(1)"))
        .await
        .unwrap_err();
    assert!(gone.to_string().contains("create_session"), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_ends_the_session_and_its_container() {
    let sandbox = sandbox_with(&["--pool-size", "0"]);
    let id = open(&sandbox).await;
    let ended = call(
        &sandbox,
        &id,
        "import atexit\natexit.register(print, 'bye')\nexit(3)",
    )
    .await;
    assert_eq!(ended.ended, Some(SessionEnd::Exited));
    assert_eq!(ended.result.exit_code, 3);
    assert_eq!(
        out(&ended),
        "bye\n",
        "atexit handlers run as at a normal exit"
    );
    assert_all_removed(&sandbox).await;
    assert_eq!(sandbox.open_sessions(), 0);
    assert!(matches!(
        try_call(&sandbox, &id, ExecutionRequest::new("1")).await,
        Err(SandboxError::UnknownSession { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_closed_and_its_container_removed() {
    let sandbox = sandbox_with(&["--pool-size", "0", "--session-idle", "5s"]);
    sandbox.start_reaper();
    let id = open(&sandbox).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A call resets the idle clock.
    assert_eq!(out(&call(&sandbox, &id, "print(1)").await), "1\n");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sandbox.open_sessions(),
        1,
        "3 s after its last call it is still open"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sandbox.open_sessions(), 0);
    assert_all_removed(&sandbox).await;
    let expired = try_call(&sandbox, &id, ExecutionRequest::new("1"))
        .await
        .unwrap_err();
    assert!(expired.to_string().contains("expired"), "{expired}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_closed_at_its_maximum_age_even_while_in_use() {
    let sandbox = sandbox_with(&["--pool-size", "0", "--session-max-age", "6s"]);
    sandbox.start_reaper();
    let id = open(&sandbox).await;
    for _ in 0..3 {
        call(&sandbox, &id, "print(1)").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let running = call(&sandbox, &id, "import time\ntime.sleep(20)").await;
    assert_eq!(running.ended, Some(SessionEnd::Expired), "{running:?}");
    assert_all_removed(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_limit_is_a_clear_error_and_closing_one_makes_room() {
    let sandbox = sandbox_with(&["--pool-size", "0", "--max-sessions", "1"]);
    let id = open(&sandbox).await;
    let refused = sandbox
        .create_session(None, &CancellationToken::new())
        .await
        .unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("1 sessions are open") && message.contains("close_session"),
        "{message}"
    );
    assert_eq!(
        containers_of(&sandbox).await.len(),
        1,
        "the refusal made no container"
    );
    sandbox.close_session(&id, None).unwrap();
    let again = open(&sandbox).await;
    sandbox.close_session(&again, None).unwrap();
    assert_all_removed(&sandbox).await;

    let off = sandbox_with(&["--max-sessions", "0"]);
    let refused = off
        .create_session(None, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("turned off"), "{refused}");
    // An id given to a server without sessions is told so, not to create a session.
    let refused = try_call(&off, &"0".repeat(32), ExecutionRequest::new("1"))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("without session_id"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_and_hostile_ids_are_unknown_and_never_echoed_raw() {
    let sandbox = sandbox_with(&["--pool-size", "0"]);
    let id = open(&sandbox).await;
    let hostile = [
        String::new(),
        "0".repeat(32),
        format!("{id} "),
        id.to_uppercase(),
        format!("{id}\n\u{1b}[2J"),
        "../../etc/passwd".to_string(),
        "x".repeat(1 << 20),
    ];
    for bad in &hostile {
        let error = try_call(&sandbox, bad, ExecutionRequest::new("1"))
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(error, SandboxError::UnknownSession { .. }),
            "{text}"
        );
        assert!(text.len() < 600, "the id is cut: {} bytes", text.len());
        assert!(!text.contains('\u{1b}') && !text.contains("../"), "{text}");
    }
    // The real one still works.
    assert_eq!(out(&call(&sandbox, &id, "print(7)").await), "7\n");
    sandbox.close_session(&id, None).unwrap();
    assert!(sandbox.close_session(&id, None).is_err(), "closed twice");
    assert_all_removed(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_take_turns_and_an_idle_session_holds_no_concurrency_slot() {
    let sandbox = sandbox_with(&["--pool-size", "0", "--concurrency", "1"]);
    let id = open(&sandbox).await;
    // With one slot and the session idle, a plain call runs at once.
    assert_eq!(
        common::run(&sandbox, "print(2)").await.stdout.to_string(),
        "2\n"
    );
    call(&sandbox, &id, "order = []").await;
    let first = try_call(
        &sandbox,
        &id,
        ExecutionRequest::new("import time\ntime.sleep(1.5)\norder.append('first')"),
    );
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        try_call(
            &sandbox,
            &id,
            ExecutionRequest::new("order.append('second')\nprint(order)"),
        )
        .await
    };
    let (first, second) = tokio::join!(first, second);
    first.unwrap();
    let second = second.unwrap();
    assert_eq!(
        out(&second),
        "['first', 'second']\n",
        "the second waited its turn"
    );
    sandbox.close_session(&id, None).unwrap();
    assert_all_removed(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_is_interrupted_and_the_session_goes_on() {
    let sandbox = sandbox_with(&["--pool-size", "0"]);
    let id = open(&sandbox).await;
    call(&sandbox, &id, "kept = 'yes'").await;
    let cancel = CancellationToken::new();
    let cancelled = {
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            canceller.cancel();
        });
        sandbox
            .execute_in_session(
                &id,
                None,
                &ExecutionRequest::new("import time\nwhile True: time.sleep(0.05)"),
                &cancel,
                &|_, _| {},
            )
            .await
    };
    assert!(matches!(cancelled, Err(SandboxError::Cancelled)));
    let after = call(&sandbox, &id, "print(kept)").await;
    assert_eq!(out(&after), "yes\n", "{}", err(&after));
    sandbox.close_session(&id, None).unwrap();
    assert_all_removed(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_figures_come_back_with_the_call_that_made_them() {
    let sandbox = sandbox_with(&["--pool-size", "0"]);
    let id = open(&sandbox).await;
    let names = |o: &SessionOutcome| {
        o.result
            .returned
            .files
            .iter()
            .map(|f| f.name.clone())
            .collect::<Vec<_>>()
    };
    let wrote = call(
        &sandbox,
        &id,
        "open('/tmp/outputs/a.txt', 'w').write('one')",
    )
    .await;
    assert_eq!(names(&wrote), ["a.txt"]);
    let nothing = call(&sandbox, &id, "x = 1").await;
    assert!(
        names(&nothing).is_empty(),
        "an unchanged file is not returned again"
    );
    let changed = call(
        &sandbox,
        &id,
        "open('/tmp/outputs/a.txt', 'w').write('two!')\nopen('/tmp/outputs/b.txt', 'w').write('b')",
    )
    .await;
    assert_eq!(names(&changed), ["a.txt", "b.txt"]);
    sandbox.close_session(&id, None).unwrap();
    assert_all_removed(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_written_between_calls_comes_with_the_next_call() {
    let sandbox = sandbox_with(&["--pool-size", "0"]);
    let id = open(&sandbox).await;
    call(
        &sandbox,
        &id,
        "import threading, time\n\
         threading.Thread(target=lambda: (time.sleep(0.5), print('late'))).start()",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let next = call(&sandbox, &id, "print('now')").await;
    assert_eq!(out(&next), "late\nnow\n");
    sandbox.close_session(&id, None).unwrap();
    assert_all_removed(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_session_and_removes_its_container() {
    let sandbox = sandbox_with(&["--pool-size", "0"]);
    let id = open(&sandbox).await;
    call(&sandbox, &id, "x = 1").await;
    sandbox.shutdown(Duration::from_secs(20)).await;
    assert!(containers_of(&sandbox).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_memory_ends_the_session_and_says_so() {
    let sandbox = sandbox_with(&["--pool-size", "0", "--memory", "128m"]);
    let id = open(&sandbox).await;
    call(&sandbox, &id, "kept = 1").await;
    let hog = call(
        &sandbox,
        &id,
        "chunks = []\nwhile True: chunks.append(bytearray(16 << 20))",
    )
    .await;
    assert_eq!(hog.result.exit_code, 137, "{hog:?}");
    assert!(hog.ended.is_some(), "the interpreter is gone: {hog:?}");
    if !common::gvisor() {
        // gVisor hides the memory cgroup from the runner and the engine alike.
        assert!(hog.result.oom_killed);
        assert_eq!(hog.ended, Some(SessionEnd::OutOfMemory));
    }
    assert_all_removed(&sandbox).await;
}

/// The end of a session's call is the interpreter's word, on a pipe the program can find: a
/// program that writes garbage or a forged status to every descriptor it has can misreport
/// its own call at most. The supervisor survives, the session goes on, and the next calls are
/// answered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_forging_the_end_of_its_call_cannot_break_its_session() {
    let sandbox = sandbox_with(&["--pool-size", "0"]);
    let id = open(&sandbox).await;
    call(&sandbox, &id, "kept = 'intact'").await;
    // Python expressions for the bytes written: garbage, bare statuses, huge numbers, and
    // well-formed lines for every call number this session will reach.
    let forgeries = [
        "b'garbage\\n'",
        "b'0\\n'",
        "b'99999999999999999999\\n\\n\\n'",
        "b''.join(b'%d 0\\n' % n for n in range(1, 40))",
        "b'x' * 100000",
    ];
    for forged in forgeries {
        let code = format!(
            "import os\nfor fd in range(3, 256):\n    try:\n        os.write(fd, {forged})\n    \
             except OSError:\n        pass\nimport time\ntime.sleep(0.2)\nprint('after')"
        );
        let forging = call(&sandbox, &id, &code).await;
        assert_eq!(forging.ended, None, "{forging:?}");
        let next = call(&sandbox, &id, "print(kept)").await;
        assert!(out(&next).ends_with("intact\n"), "{next:?}");
        assert_eq!(next.ended, None);
    }
    let last = call(&sandbox, &id, "print(kept)").await;
    assert_eq!(out(&last), "intact\n", "{last:?}");
    sandbox.close_session(&id, None).unwrap();
    assert_all_removed(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_planted_in_tmp_never_runs_in_a_sessions_supervisor() {
    let sandbox = sandbox_with(&["--pool-size", "0"]);
    let id = open(&sandbox).await;
    let planted = call(&sandbox, &id, PLANTER).await;
    assert_eq!(out(&planted), "own module: 42\n", "{}", err(&planted));
    // The next calls make the supervisor collect files and relay output again.
    for round in 0..2 {
        let next = call(
            &sandbox,
            &id,
            &format!("open('/tmp/outputs/r{round}.txt', 'w').write('x')\nprint('round', {round})"),
        )
        .await;
        assert_eq!(out(&next), format!("round {round}\n"), "{}", err(&next));
        assert!(!err(&planted).contains("HIJACKED"), "{}", err(&planted));
        assert!(!err(&next).contains("HIJACKED"), "{}", err(&next));
        assert_eq!(next.result.returned.files.len(), 1, "{:?}", next.result);
    }
    sandbox.close_session(&id, None).unwrap();
    assert_all_removed(&sandbox).await;
}

/// The finding under gVisor: a call leaves a thread that opens the supervisor's stdin through
/// /proc/1/fd/0, reads the next call's framed payload (its token with it) and answers in its
/// place with a forged trailer; the next three calls came back `forged`, exit 42, and their
/// code never ran. The supervisor is now another uid: the thread opens nothing, under runc
/// and gVisor alike, and every later call runs and reports its own output and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_left_by_one_call_cannot_read_or_answer_the_next_calls() {
    let sandbox = sandbox_with(&["--pool-size", "0"]);
    let id = open(&sandbox).await;
    let probe = call(&sandbox, &id, common::SUPERVISOR_PROBE).await;
    common::assert_supervisor_out_of_reach(&out(&probe));
    let thief = r#"
import os, re, threading, time
attempts = []
def steal():
    while True:
        for fd in (0, 1, 2):
            try:
                source = os.open('/proc/1/fd/%d' % fd, os.O_RDONLY)
            except OSError as error:
                attempts.append(error.errno)
                continue
            data = os.read(source, 65536)
            token = re.search(rb'[0-9a-f]{32}', data)
            for out in (1, 2):
                try:
                    sink = os.open('/proc/1/fd/%d' % out, os.O_WRONLY)
                    os.write(sink, b'forged\n\0pyexec-exit ' + (token.group() if token else b'') + b' 42 0\n')
                except OSError:
                    pass
        time.sleep(0.01)
threading.Thread(target=steal, daemon=True).start()
time.sleep(0.2)
print('planted', len(attempts) > 0)
"#;
    let planted = call(&sandbox, &id, thief).await;
    assert_eq!(out(&planted), "planted True\n", "{}", err(&planted));
    for round in 0..3 {
        let next = call(
            &sandbox,
            &id,
            &format!("print('real', {round}, sorted(set(attempts)))"),
        )
        .await;
        assert_eq!(next.result.exit_code, 0, "{:?}", next.result);
        assert_eq!(
            out(&next),
            format!("real {round} [13]\n"),
            "the call ran, and the thread was refused every time: {:?}",
            next.result
        );
        assert!(!out(&next).contains("forged"), "{:?}", next.result);
        assert_eq!(next.ended, None);
    }
    sandbox.close_session(&id, None).unwrap();
    assert_all_removed(&sandbox).await;
}

/// CPU time the engine has counted for a container, in nanoseconds.
async fn cpu_used(name: &str) -> u64 {
    use futures::StreamExt;
    let options = bollard::query_parameters::StatsOptionsBuilder::default()
        .stream(false)
        .one_shot(true)
        .build();
    let stats = common::docker()
        .negotiate_version()
        .await
        .unwrap()
        .stats(name.trim_start_matches('/'), Some(options))
        .next()
        .await
        .expect("a stats answer")
        .expect("stats");
    stats
        .cpu_stats
        .and_then(|cpu| cpu.cpu_usage)
        .and_then(|usage| usage.total_usage)
        .expect("total CPU usage")
}

/// Whether the engine says the container is paused.
async fn paused(name: &str) -> bool {
    let docker = common::docker().negotiate_version().await.unwrap();
    docker
        .inspect_container(name.trim_start_matches('/'), None)
        .await
        .ok()
        .and_then(|c| c.state)
        .and_then(|s| s.paused)
        .unwrap_or(false)
}

/// The finding: with `--concurrency 1`, sessions whose calls left spinning threads took both
/// cores between calls, outside any slot. A session is now frozen between calls: the engine
/// counts no CPU for it while it waits, however hard its thread spins, and at the next call
/// the thread and every variable are as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_frozen_between_calls_and_wakes_intact() {
    let sandbox = sandbox_with(&["--pool-size", "0", "--concurrency", "1"]);
    let id = open(&sandbox).await;
    let started = call(
        &sandbox,
        &id,
        "import threading\nspins = [0]\nkept = 'intact'\n\
         def spin():\n    while True:\n        spins[0] += 1\n\
         threading.Thread(target=spin, daemon=True).start()\n\
         import time\ntime.sleep(0.3)\nprint('spinning', spins[0] > 0)",
    )
    .await;
    assert_eq!(out(&started), "spinning True\n", "{}", err(&started));
    let name = containers_of(&sandbox)
        .await
        .pop()
        .expect("the session's container");
    let mut frozen = false;
    for _ in 0..50 {
        if paused(&name).await {
            frozen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(frozen, "the session is paused after its call");
    let before = cpu_used(&name).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_used(&name).await - before;
    // A spinning thread would have used about 3 s of CPU.
    assert!(
        used < 100_000_000,
        "{} ms of CPU in 3 s between calls",
        used / 1_000_000
    );
    let woken = call(
        &sandbox,
        &id,
        "was = spins[0]\ntime.sleep(0.3)\nprint(kept, spins[0] > was)",
    )
    .await;
    assert_eq!(out(&woken), "intact True\n", "{}", err(&woken));
    assert_eq!(woken.ended, None);
    eprintln!("CPU between calls: {} ms in 3 s", used / 1_000_000);
    sandbox.close_session(&id, None).unwrap();
    assert_all_removed(&sandbox).await;
}
