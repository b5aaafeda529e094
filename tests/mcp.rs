//! The server as an MCP client sees it: the built binary spawned over stdio and driven by
//! rmcp's client, exactly as Claude Desktop would.

use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

async fn client() -> RunningService<RoleClient, ()> {
    let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-python-executor"))
        .configure(|cmd| {
            cmd.env("PYEXEC_TIMEOUT", "10");
        });
    let transport = TokioChildProcess::new(command).expect("server starts");
    ().serve(transport).await.expect("MCP handshake")
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

#[tokio::test]
async fn tools_list_shows_execute_python_with_the_original_arguments() {
    let client = client().await;
    let tools = client.list_all_tools().await.unwrap();
    let tool = tools
        .iter()
        .find(|t| t.name == "execute_python")
        .expect("execute_python listed");
    let schema = Value::Object((*tool.input_schema).clone());
    assert_eq!(schema["properties"]["code"]["type"], "string");
    assert!(schema["properties"]["inputData"].is_object(), "{schema}");
    assert_eq!(schema["required"], json!(["code"]));
    let description = tool.description.as_deref().unwrap();
    assert!(
        description.contains("10 s wall clock"),
        "limits in force: {description}"
    );
    assert!(description.contains("no network"), "{description}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_call_returns_labelled_output_and_structured_status() {
    let client = client().await;
    let result = call(&client, json!({"code": "print('Hello, World!')"})).await;
    assert_eq!(result.is_error, Some(false));
    assert_eq!(text(&result), "stdout:\nHello, World!\n");
    let status = result.structured_content.unwrap();
    assert_eq!(status["exit_code"], 0);
    assert_eq!(status["timed_out"], false);
    assert!(status["duration_ms"].is_u64());

    let result = call(
        &client,
        json!({"code": "print(input()[::-1])", "inputData": ["abc"]}),
    )
    .await;
    assert_eq!(text(&result), "stdout:\ncba\n");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_traceback_is_an_error_result() {
    let client = client().await;
    let result = call(&client, json!({"code": "1/0"})).await;
    assert_eq!(result.is_error, Some(true));
    let text = text(&result);
    assert!(text.contains("stderr:\nTraceback"), "{text}");
    assert!(text.contains("ZeroDivisionError"), "{text}");
    assert!(text.ends_with("exit code 1"), "{text}");
    assert_eq!(result.structured_content.unwrap()["exit_code"], 1);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn bad_arguments_are_refused_with_a_clear_message() {
    let client = client().await;
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
    client.cancel().await.unwrap();
}
