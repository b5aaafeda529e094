//! The server as an MCP client sees it, reached three ways with the same tests: the built
//! binary spawned over stdio and driven by rmcp's client exactly as Claude Desktop would; the
//! library's `serving::pipes` in this process over an in-memory pipe; and `serving::http` in
//! this process on a loopback port, with a bearer token, through rmcp's Streamable HTTP
//! client. Requests no typed client sends go to the binary's raw pipes at the end.

mod common;

use clap::Parser;
use mcp_python_executor::config::HttpArgs;
use mcp_python_executor::serving;
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How a test reaches the server.
#[derive(Clone, Copy, Debug)]
enum Via {
    Binary,
    InProcess,
    Http,
}

/// A server reached one way, and what ends it.
struct Served {
    client: RunningService<RoleClient, ()>,
    /// In-process servers: their task, what stops it (HTTP), and their sandbox's instance.
    in_process: Option<InProcess>,
}

struct InProcess {
    task: JoinHandle<anyhow::Result<()>>,
    stop: tokio::sync::oneshot::Sender<()>,
    /// Whether the server ends when its client leaves (pipes) or only when stopped (HTTP).
    ends_alone: bool,
    sandbox: std::sync::Arc<mcp_python_executor::sandbox::Sandbox>,
    _cleanup: common::TagCleanup,
}

#[derive(Parser)]
struct HttpFlags {
    #[command(flatten)]
    http: HttpArgs,
}

const TOKEN: &str = "test-token-0123456789abcdef";

/// The server with a 10 s timeout, reached `via`.
async fn serve(via: Via) -> Served {
    if let Via::Binary = via {
        let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-python-executor"))
            .configure(|cmd| {
                cmd.env("PYEXEC_TIMEOUT", "10");
            });
        let transport = TokioChildProcess::new(command).expect("server starts");
        let client = ().serve(transport).await.expect("MCP handshake");
        return Served {
            client,
            in_process: None,
        };
    }
    let (sandbox, environment, cleanup) = common::environment_with(&["--timeout", "10"]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let (client, task) = if let Via::InProcess = via {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (input, output) = tokio::io::split(theirs);
        let task = tokio::spawn(serving::pipes(
            input,
            output,
            sandbox.clone(),
            environment,
            stopped,
        ));
        let client = ().serve(ours).await.expect("MCP handshake");
        (client, task)
    } else {
        let flags =
            HttpFlags::try_parse_from(["x", "--http", "127.0.0.1:0", "--http-token", TOKEN])
                .expect("valid HTTP flags");
        let settings = flags
            .http
            .resolve(sandbox.config().limits.max_input_bytes)
            .expect("valid HTTP settings")
            .expect("--http given");
        let listener = mcp_python_executor::transport::http::bind(&settings)
            .await
            .expect("a loopback port");
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let task = tokio::spawn(serving::http(
            listener,
            settings,
            sandbox.clone(),
            environment,
            stopped,
        ));
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url).auth_header(TOKEN),
        );
        let client = ().serve(transport).await.expect("MCP handshake");
        (client, task)
    };
    Served {
        client,
        in_process: Some(InProcess {
            task,
            stop,
            sandbox,
            ends_alone: matches!(via, Via::InProcess),
            _cleanup: cleanup,
        }),
    }
}

impl Served {
    /// Leaves as a client does. An in-process server on pipes must then end by itself, an
    /// HTTP one (which serves other clients) on its shutdown signal; either cleanly, with none
    /// of its containers left.
    async fn finish(self) {
        self.client.cancel().await.unwrap();
        let Some(InProcess {
            task,
            stop,
            sandbox,
            ends_alone,
            _cleanup,
        }) = self.in_process
        else {
            return;
        };
        let stop = if ends_alone {
            Some(stop)
        } else {
            let _ = stop.send(());
            None
        };
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the server ends within 60 s")
            .expect("the server task did not panic")
            .expect("the server ended without an error");
        drop(stop);
        common::assert_no_containers(&sandbox).await;
    }
}

async fn call(client: &RunningService<RoleClient, ()>, arguments: Value) -> CallToolResult {
    let params = CallToolRequestParams::new("execute_python")
        .with_arguments(arguments.as_object().unwrap().clone());
    client.call_tool(params).await.expect("tools/call answered")
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text(t) => Some(t.text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn tools_list_shows_execute_python_with_the_original_arguments(via: Via) {
    let served = serve(via).await;
    let client = &served.client;
    let tools = client.list_all_tools().await.unwrap();
    let tool = tools
        .iter()
        .find(|t| t.name == "execute_python")
        .expect("execute_python listed");
    let schema = Value::Object((*tool.input_schema).clone());
    assert_eq!(schema["properties"]["code"]["type"], "string");
    // A plain array, as the original described it (a nullable one reaches some clients,
    // the MCP Inspector's CLI among them, as a string).
    assert_eq!(
        schema["properties"]["inputData"]["type"], "array",
        "{schema}"
    );
    assert_eq!(schema["properties"]["inputData"]["items"]["type"], "string");
    assert_eq!(schema["required"], json!(["code"]));
    let description = tool.description.as_deref().unwrap();
    assert!(
        description.contains("10 s wall clock"),
        "limits in force: {description}"
    );
    assert!(description.contains("no network"), "{description}");
    served.finish().await;
}

async fn a_call_returns_labelled_output_and_structured_status(via: Via) {
    let served = serve(via).await;
    let client = &served.client;
    let result = call(client, json!({"code": "print('Hello, World!')"})).await;
    assert_eq!(result.is_error, Some(false));
    assert_eq!(text(&result), "stdout:\nHello, World!\n");
    let status = result.structured_content.unwrap();
    assert_eq!(status["exit_code"], 0);
    assert_eq!(status["timed_out"], false);
    assert!(status["duration_ms"].is_u64());

    let result = call(
        client,
        json!({"code": "print(input()[::-1])", "inputData": ["abc"]}),
    )
    .await;
    assert_eq!(text(&result), "stdout:\ncba\n");
    // An explicit null is no input, as before.
    let result = call(client, json!({"code": "print('none')", "inputData": null})).await;
    assert_eq!(text(&result), "stdout:\nnone\n");
    served.finish().await;
}

async fn a_traceback_is_an_error_result(via: Via) {
    let served = serve(via).await;
    let client = &served.client;
    let result = call(client, json!({"code": "1/0"})).await;
    assert_eq!(result.is_error, Some(true));
    let text = text(&result);
    assert!(text.contains("stderr:\nTraceback"), "{text}");
    assert!(text.contains("ZeroDivisionError"), "{text}");
    assert!(text.ends_with("exit code 1"), "{text}");
    assert_eq!(result.structured_content.unwrap()["exit_code"], 1);
    served.finish().await;
}

async fn bad_arguments_are_refused_with_a_clear_message(via: Via) {
    let served = serve(via).await;
    let client = &served.client;
    let params = CallToolRequestParams::new("execute_python")
        .with_arguments(json!({"inputData": ["x"]}).as_object().unwrap().clone());
    let message = match client.call_tool(params).await {
        Ok(result) => {
            assert_eq!(result.is_error, Some(true));
            text(&result)
        }
        Err(error) => error.to_string(),
    };
    assert!(message.contains("code"), "{message}");
    let params = CallToolRequestParams::new("execute_python")
        .with_arguments(json!({"code": 42}).as_object().unwrap().clone());
    let message = match client.call_tool(params).await {
        Ok(result) => text(&result),
        Err(error) => error.to_string(),
    };
    assert!(message.contains("string"), "{message}");
    served.finish().await;
}

async fn tool(
    client: &RunningService<RoleClient, ()>,
    name: &'static str,
    arguments: Value,
) -> CallToolResult {
    let params =
        CallToolRequestParams::new(name).with_arguments(arguments.as_object().unwrap().clone());
    client.call_tool(params).await.expect("tools/call answered")
}

async fn a_session_keeps_state_between_calls_until_it_is_closed(via: Via) {
    let served = serve(via).await;
    let client = &served.client;
    let tools = client.list_all_tools().await.unwrap();
    let create = tools
        .iter()
        .find(|t| t.name == "create_session")
        .expect("listed");
    let description = create.description.as_deref().unwrap();
    assert!(
        description.contains("multi-step work") && description.contains("10 min without a call"),
        "when to use it, and its limits: {description}"
    );
    assert!(tools.iter().any(|t| t.name == "close_session"));
    let execute = tools.iter().find(|t| t.name == "execute_python").unwrap();
    let schema = Value::Object((*execute.input_schema).clone());
    assert_eq!(
        schema["properties"]["session_id"]["type"], "string",
        "{schema}"
    );
    assert_eq!(
        schema["required"],
        json!(["code"]),
        "session_id is optional"
    );
    assert!(
        execute
            .description
            .as_deref()
            .unwrap()
            .contains("session_id")
    );

    let opened = tool(client, "create_session", json!({})).await;
    assert_eq!(opened.is_error, Some(false), "{}", text(&opened));
    let info = opened.structured_content.clone().unwrap();
    let id = info["session_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{info}");
    assert_eq!(info["call_timeout_seconds"], 10);
    assert!(text(&opened).contains(&id));

    let first = call(
        client,
        json!({"code": "import math\nr = 2", "session_id": id}),
    )
    .await;
    assert_eq!(first.is_error, Some(false), "{}", text(&first));
    let second = call(
        client,
        json!({"code": "print(round(math.pi * r * r, 2))", "session_id": id}),
    )
    .await;
    assert_eq!(text(&second), "stdout:\n12.57\n");
    // A plain call (no session_id, or an empty one) starts clean.
    for plain in [
        json!({"code": "print(r)"}),
        json!({"code": "print(r)", "session_id": ""}),
    ] {
        let plain = call(client, plain).await;
        assert!(text(&plain).contains("NameError"), "{}", text(&plain));
    }
    // An exception fails the call, not the session.
    let failed = call(client, json!({"code": "1/0", "session_id": id})).await;
    assert_eq!(failed.is_error, Some(true));
    assert!(
        failed
            .structured_content
            .unwrap()
            .get("session_ended")
            .is_some_and(Value::is_null)
    );
    let ended = call(
        client,
        json!({"code": "print(r)\nexit()", "session_id": id}),
    )
    .await;
    let said = text(&ended);
    assert!(
        said.contains("2\n") && said.contains("The session has ended"),
        "{said}"
    );
    assert_eq!(ended.structured_content.unwrap()["session_ended"], "exited");
    let unknown = call(client, json!({"code": "print(r)", "session_id": id})).await;
    assert_eq!(unknown.is_error, Some(true));
    assert!(
        text(&unknown).contains("create_session"),
        "{}",
        text(&unknown)
    );

    let again = tool(client, "create_session", json!({})).await;
    let id = again.structured_content.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let closed = tool(client, "close_session", json!({"session_id": id})).await;
    assert_eq!(closed.is_error, Some(false), "{}", text(&closed));
    let twice = tool(client, "close_session", json!({"session_id": id})).await;
    assert_eq!(twice.is_error, Some(true));
    assert!(text(&twice).contains("unknown session"), "{}", text(&twice));
    served.finish().await;
}

/// Each test above, once per way of reaching the server.
macro_rules! every_transport {
    ($($test:ident),* $(,)?) => {
        mod binary {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Via::Binary).await })*
        }
        mod in_process {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Via::InProcess).await })*
        }
        mod http {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Via::Http).await })*
        }
    };
}

every_transport!(
    tools_list_shows_execute_python_with_the_original_arguments,
    a_call_returns_labelled_output_and_structured_status,
    a_traceback_is_an_error_result,
    bad_arguments_are_refused_with_a_clear_message,
    a_session_keeps_state_between_calls_until_it_is_closed,
);

/// Over HTTP a session belongs to the token that created it: a client with another accepted
/// token can neither use nor close it, and learns nothing from trying (the same "unknown
/// session" as for a made-up id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_unknown_to_every_token_but_the_one_that_created_it() {
    let (sandbox, environment, _cleanup) = common::environment_with(&["--timeout", "10"]);
    let alice = "alice-token-0123456789abcdef";
    let bob = "bob-token-0123456789abcdef00";
    let tokens = std::env::temp_dir().join(format!("pyexec-tokens-{}", uuid::Uuid::new_v4()));
    std::fs::write(&tokens, format!("{alice}\n{bob}\n")).unwrap();
    let flags = HttpFlags::try_parse_from([
        "x",
        "--http",
        "127.0.0.1:0",
        "--http-tokens",
        tokens.to_str().unwrap(),
    ])
    .unwrap();
    let settings = flags.http.resolve(1 << 20).unwrap().unwrap();
    let listener = mcp_python_executor::transport::http::bind(&settings)
        .await
        .unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serving::http(
        listener,
        settings,
        sandbox.clone(),
        environment,
        async {
            let _ = stopped.await;
        },
    ));
    let client = |token: &str| {
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url.clone())
                .auth_header(token.to_string()),
        );
        ().serve(transport)
    };
    let (alices, bobs) = (client(alice).await.unwrap(), client(bob).await.unwrap());
    let opened = tool(&alices, "create_session", json!({})).await;
    let id = opened.structured_content.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        &alices,
        json!({"code": "secret = 'alice'", "session_id": id}),
    )
    .await;

    let stolen = call(&bobs, json!({"code": "print(secret)", "session_id": id})).await;
    assert_eq!(stolen.is_error, Some(true));
    let made_up = call(&bobs, json!({"code": "1", "session_id": "0".repeat(32)})).await;
    let shown = |r: &CallToolResult| text(r).replace(&id, "ID").replace(&"0".repeat(32), "ID");
    assert_eq!(
        shown(&stolen),
        shown(&made_up),
        "no difference to learn from"
    );
    let closed = tool(&bobs, "close_session", json!({"session_id": id})).await;
    assert_eq!(closed.is_error, Some(true));
    // A second connection with Alice's token is Alice.
    let alices_again = client(alice).await.unwrap();
    let mine = call(
        &alices_again,
        json!({"code": "print(secret)", "session_id": id}),
    )
    .await;
    assert_eq!(text(&mine), "stdout:\nalice\n");

    for c in [alices, bobs, alices_again] {
        c.cancel().await.unwrap();
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    std::fs::remove_file(&tokens).unwrap();
    assert_eq!(sandbox.open_sessions(), 0, "sessions end with the server");
    common::assert_no_containers(&sandbox).await;
}

/// Over HTTP the environment is every token's, so installs are given per token (`install`
/// after it in the tokens file), and no token can take every session place: a token at
/// `--max-sessions-per-token` is refused while another token can still open one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_installs_and_session_places_are_given_per_token() {
    let (sandbox, environment, _cleanup) = common::environment_with(&[
        "--timeout",
        "10",
        "--max-sessions",
        "4",
        "--max-sessions-per-token",
        "1",
    ]);
    let alice = "alice-token-0123456789abcdef";
    let bob = "bob-token-0123456789abcdef00";
    let tokens = std::env::temp_dir().join(format!("pyexec-tokens-{}", uuid::Uuid::new_v4()));
    std::fs::write(&tokens, format!("{alice} install\n{bob}\n")).unwrap();
    let flags = HttpFlags::try_parse_from([
        "x",
        "--http",
        "127.0.0.1:0",
        "--http-tokens",
        tokens.to_str().unwrap(),
    ])
    .unwrap();
    let settings = flags.http.resolve(1 << 20).unwrap().unwrap();
    let listener = mcp_python_executor::transport::http::bind(&settings)
        .await
        .unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serving::http(
        listener,
        settings,
        sandbox.clone(),
        environment,
        async {
            let _ = stopped.await;
        },
    ));
    let client = |token: &str| {
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url.clone())
                .auth_header(token.to_string()),
        );
        ().serve(transport)
    };
    let (alices, bobs) = (client(alice).await.unwrap(), client(bob).await.unwrap());

    let refused = tool(&bobs, "install_packages", json!({"packages": ["six"]})).await;
    assert_eq!(refused.is_error, Some(true));
    assert!(
        text(&refused).contains("not allowed for your token")
            && text(&refused).contains("`install` after your token"),
        "{}",
        text(&refused)
    );
    // Alice passes the permission: her (invalid) spec is what is refused.
    let params = CallToolRequestParams::new("install_packages").with_arguments(
        json!({"packages": ["--index-url=x"]})
            .as_object()
            .unwrap()
            .clone(),
    );
    let hers = match alices.call_tool(params).await {
        Ok(result) => text(&result),
        Err(error) => error.to_string(),
    };
    assert!(!hers.contains("not allowed"), "{hers}");
    assert!(hers.contains("--index-url"), "{hers}");

    let first = tool(&alices, "create_session", json!({})).await;
    assert_eq!(first.is_error, Some(false), "{}", text(&first));
    let second = tool(&alices, "create_session", json!({})).await;
    assert_eq!(second.is_error, Some(true));
    assert!(
        text(&second).contains("--max-sessions-per-token"),
        "{}",
        text(&second)
    );
    let bobs_own = tool(&bobs, "create_session", json!({})).await;
    assert_eq!(bobs_own.is_error, Some(false), "{}", text(&bobs_own));
    assert_eq!(sandbox.open_sessions(), 2);

    for c in [alices, bobs] {
        c.cancel().await.unwrap();
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    std::fs::remove_file(&tokens).unwrap();
    common::assert_no_containers(&sandbox).await;
}

/// `--no-install`: install_packages is not listed, and a client that calls it anyway is
/// told why, with what it can do instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_install_the_tool_is_unlisted_and_refused_with_the_reason() {
    let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-python-executor"))
        .configure(|cmd| {
            cmd.env("PYEXEC_NO_INSTALL", "true")
                .env("PYEXEC_POOL_SIZE", "0")
                .stderr(std::process::Stdio::null());
        });
    let client = ().serve(TokioChildProcess::new(command).unwrap()).await.unwrap();
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(
        !names.contains(&"install_packages".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"execute_python".to_string()), "{names:?}");
    let refused = tool(&client, "install_packages", json!({"packages": ["six"]})).await;
    assert_eq!(refused.is_error, Some(true));
    assert!(
        text(&refused).contains("--no-install") && text(&refused).contains("list_packages"),
        "{}",
        text(&refused)
    );
    client.cancel().await.unwrap();
}

/// Reads the server's answers until `count` with an id of 2 or more have come (ids 0 and 1
/// are the handshake's), each within 60 s.
async fn answers_from(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    count: usize,
) -> std::collections::HashMap<u64, Value> {
    let mut answers = std::collections::HashMap::new();
    while answers.len() < count {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no answer within 60 s; answered so far: {answers:?}"))
            .unwrap()
            .expect("server answers");
        let value: Value = serde_json::from_str(&line).unwrap();
        if let Some(id) = value["id"].as_u64().filter(|id| *id >= 2) {
            answers.insert(id, value);
        }
    }
    answers
}

/// The binary on raw pipes, already sent `initialize` and `notifications/initialized`, for
/// requests no typed client sends.
async fn raw_server(
    envs: &[(&str, &str)],
) -> (
    tokio::process::Child,
    tokio::process::ChildStdin,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-python-executor"))
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = server.stdin.take().unwrap();
    let lines = BufReader::new(server.stdout.take().unwrap()).lines();
    for message in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    ] {
        stdin.write_all(message.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
    }
    (server, stdin, lines)
}

/// Raw JSON-RPC, because no typed client sends a lone surrogate or a 17 MiB line: each such
/// request gets an error answer naming the problem (rather than the silence that leaves a
/// client waiting), no container runs for it, and the server keeps serving.
#[tokio::test]
async fn invalid_surrogates_and_oversized_requests_get_clear_errors() {
    use tokio::io::AsyncWriteExt;
    let (mut server, mut stdin, mut lines) = raw_server(&[("PYEXEC_MAX_INPUT", "64k")]).await;
    let big = "x".repeat(100_000);
    let messages = [
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"print('\ud800')"}}}"#.to_string(),
        format!(r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"execute_python","arguments":{{"code":"{big}"}}}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"execute_python","arguments":{{"code":"{}"}}}}}}"#, "x".repeat(17 << 20)),
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"execute_python","arguments":{"code":"print('fine')"}}}"#.to_string(),
    ];
    for message in &messages {
        stdin.write_all(message.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
    }
    let answers = answers_from(&mut lines, 4).await;
    let surrogate = &answers[&2]["error"];
    assert_eq!(surrogate["code"], -32700, "{surrogate}");
    assert!(
        surrogate["message"]
            .as_str()
            .unwrap()
            .contains("lone surrogate"),
        "{surrogate}"
    );
    let oversized = serde_json::to_string(&answers[&3]).unwrap();
    assert!(oversized.contains("request too large"), "{oversized}");
    assert!(oversized.contains("PYEXEC_MAX_INPUT"), "{oversized}");
    let huge = &answers[&4]["error"];
    assert!(
        huge["message"]
            .as_str()
            .unwrap()
            .contains("request too large"),
        "{huge}"
    );
    assert_eq!(
        answers[&5]["result"]["content"][0]["text"],
        "stdout:\nfine\n"
    );
    drop(stdin);
    server.wait().await.unwrap();
}

/// Requests of 16 MiB − 1, exactly 16 MiB and 16 MiB + 1 bytes (newline not counted): the
/// first reaches rmcp and is answered by it, the other two are answered by the gateway; none
/// is dropped in silence (rmcp's own limit counts the newline).
#[tokio::test]
async fn requests_at_the_size_boundary_are_all_answered() {
    use tokio::io::AsyncWriteExt;
    let (mut server, mut stdin, mut lines) = raw_server(&[("PYEXEC_POOL_SIZE", "0")]).await;
    let limit = 16 << 20;
    for (id, size) in [(2, limit - 1), (3, limit), (4, limit + 1)] {
        let head = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping""#);
        let mut line = head.into_bytes();
        line.resize(size - 1, b' ');
        line.push(b'}');
        assert_eq!(line.len(), size);
        line.push(b'\n');
        stdin.write_all(&line).await.unwrap();
    }
    let answers = answers_from(&mut lines, 3).await;
    assert!(answers[&2]["result"].is_object(), "{}", answers[&2]);
    for id in [3, 4] {
        let message = answers[&id]["error"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("request too large"), "{}", answers[&id]);
    }
    drop(stdin);
    server.wait().await.unwrap();
}
