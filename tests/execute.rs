//! The promises of `execute_python` below the protocol, each checked against real Docker and
//! real Python: output, stdin, errors, exit codes, unicode, and that every call leaves nothing.

mod common;

use common::{assert_no_containers, run, sandbox, try_run};
use mcp_python_executor::sandbox::ExecutionRequest;

#[tokio::test]
async fn hello_world_prints_to_stdout() {
    let sandbox = sandbox();
    let result = run(&sandbox, "print('Hello, World!')").await;
    assert_eq!(result.stdout, "Hello, World!\n");
    assert_eq!(result.stderr, "");
    assert_eq!(result.exit_code, 0);
    assert!(!result.failed());
    assert!(!result.timed_out && !result.oom_killed && !result.truncated);
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn input_data_lines_are_the_programs_stdin_then_eof() {
    let sandbox = sandbox();
    let code = "import sys\nname = input()\nrest = sys.stdin.read()\nprint(f'{name}|{rest!r}')";
    let request = ExecutionRequest::new(code).with_input(["Ada", "line 2", "line 3"]);
    let result = try_run(&sandbox, request).await.unwrap();
    assert_eq!(
        result.stdout, "Ada|'line 2\\nline 3\\n'\n",
        "stderr: {}",
        result.stderr
    );
}

#[tokio::test]
async fn without_input_data_stdin_is_empty() {
    let sandbox = sandbox();
    let result = run(&sandbox, "import sys\nprint(repr(sys.stdin.read()))").await;
    assert_eq!(result.stdout, "''\n");
}

#[tokio::test]
async fn stderr_is_kept_apart_from_stdout() {
    let sandbox = sandbox();
    let result = run(
        &sandbox,
        "import sys\nprint('out')\nprint('err', file=sys.stderr)",
    )
    .await;
    assert_eq!(result.stdout, "out\n");
    assert_eq!(result.stderr, "err\n");
    assert_eq!(result.exit_code, 0);
}

#[tokio::test]
async fn an_exception_fails_with_a_traceback_of_the_users_code() {
    let sandbox = sandbox();
    let result = run(&sandbox, "x = 1\nraise ValueError('bad value')\n").await;
    assert_eq!(result.exit_code, 1);
    assert!(result.failed());
    assert!(
        result.stderr.starts_with("Traceback"),
        "stderr: {}",
        result.stderr
    );
    assert!(
        result.stderr.contains("line 2"),
        "stderr: {}",
        result.stderr
    );
    assert!(
        result.stderr.contains("raise ValueError('bad value')"),
        "{}",
        result.stderr
    );
    assert!(result.stderr.contains("ValueError: bad value"));
    // The runner's own frames are not shown.
    assert!(
        !result.stderr.contains("exec("),
        "stderr: {}",
        result.stderr
    );
}

#[tokio::test]
async fn a_syntax_error_is_reported_like_python_does() {
    let sandbox = sandbox();
    let result = run(&sandbox, "print('unclosed'\n").await;
    assert_eq!(result.exit_code, 1);
    assert!(
        result.stderr.contains("SyntaxError"),
        "stderr: {}",
        result.stderr
    );
}

#[tokio::test]
async fn exit_codes_pass_through() {
    let sandbox = sandbox();
    assert_eq!(run(&sandbox, "import sys; sys.exit(3)").await.exit_code, 3);
    assert_eq!(run(&sandbox, "import os; os._exit(42)").await.exit_code, 42);
    let result = run(&sandbox, "raise SystemExit('goodbye')").await;
    assert_eq!(result.exit_code, 1);
    assert_eq!(result.stderr, "goodbye\n");
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn unicode_round_trips_through_code_stdin_and_output() {
    let sandbox = sandbox();
    let request =
        ExecutionRequest::new("s = input()\nprint('héllo 世界 🐍', s[::-1])").with_input(["→ñ🙂"]);
    let result = try_run(&sandbox, request).await.unwrap();
    assert_eq!(
        result.stdout, "héllo 世界 🐍 🙂ñ→\n",
        "stderr: {}",
        result.stderr
    );
}

#[tokio::test]
async fn invalid_utf8_and_nul_in_output_do_not_break_the_answer() {
    let sandbox = sandbox();
    let code = "import sys\nsys.stdout.buffer.write(b'a\\xff\\x00b\\n')";
    let result = run(&sandbox, code).await;
    assert_eq!(result.stdout, "a\u{fffd}\0b\n");
}

#[tokio::test]
async fn the_program_is_main_with_a_real_file() {
    let sandbox = sandbox();
    let code = "import sys\nprint(__name__, __file__, sys.argv)\nprint(open(__file__).read().count('\\n'))";
    let result = run(&sandbox, code).await;
    assert_eq!(
        result.stdout, "__main__ /tmp/main.py ['/tmp/main.py']\n2\n",
        "{}",
        result.stderr
    );
}

#[tokio::test]
async fn threads_and_atexit_finish_before_the_answer() {
    let sandbox = sandbox();
    let code = "import atexit, threading, time\natexit.register(lambda: print('atexit'))\n\
                t = threading.Thread(target=lambda: (time.sleep(0.3), print('thread')))\nt.start()\nprint('main')";
    let result = run(&sandbox, code).await;
    assert_eq!(result.stdout, "main\nthread\natexit\n");
}

#[tokio::test]
async fn an_oversized_request_is_refused_before_docker() {
    let sandbox = common::sandbox_with(&["--max-input", "1k"]);
    let request = ExecutionRequest::new("x".repeat(2000));
    let error = try_run(&sandbox, request).await.unwrap_err();
    assert!(error.to_string().contains("request too large"), "{error}");
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn a_missing_image_says_how_to_build_it() {
    let sandbox = common::sandbox_with(&["--image", "mcp-python-executor/does-not-exist:latest"]);
    let error = try_run(&sandbox, ExecutionRequest::new("print(1)"))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("does-not-exist"), "{message}");
    assert!(message.contains("make image"), "{message}");
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn the_calls_own_uid_still_has_a_user_name_for_getpass() {
    let sandbox = common::sandbox();
    let result = common::run(&sandbox, "import getpass\nprint(getpass.getuser())").await;
    assert_eq!(result.stdout, "sandbox\n", "{result:?}");
}
