//! Serving in-process ends everything it started: after `serving::pipes` returns (the client
//! left), no task of ours is still running on the runtime (the start-up checks, the tag
//! follower, the pool, the reaper, session expiry, removals) and no container is left.

mod common;

use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde_json::json;

fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_in_process_leaves_no_task_running_after_the_client_leaves() {
    let (sandbox, environment, _cleanup) = common::environment_with(&["--pool-size", "1"]);
    let before = alive();
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (input, output) = tokio::io::split(theirs);
    let server = tokio::spawn(mcp_python_executor::serving::pipes(
        input,
        output,
        sandbox.clone(),
        environment,
        std::future::pending(),
    ));
    let client = ().serve(ours).await.unwrap();
    let call = |name: &'static str, arguments: serde_json::Value| {
        CallToolRequestParams::new(name).with_arguments(arguments.as_object().unwrap().clone())
    };
    let answer = client
        .call_tool(call("execute_python", json!({"code": "print(6 * 7)"})))
        .await
        .unwrap();
    assert_ne!(answer.is_error, Some(true), "{answer:?}");
    // A session too, so its expiry loop and its frozen container exist at the end.
    let session = client
        .call_tool(call("create_session", json!({})))
        .await
        .unwrap();
    assert_ne!(session.is_error, Some(true), "{session:?}");
    // The pool refilled and every loop is running before the client leaves.
    let started = Instant::now();
    while sandbox.pool_ready() == 0 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sandbox.pool_ready(), 1, "the pool refilled");
    assert!(
        alive() > before + 2,
        "the background tasks run while serving"
    );

    client.cancel().await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .expect("serving ends once the client is gone")
        .unwrap()
        .unwrap();
    // What shutdown ended may take a few polls to be counted as gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive() > before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(alive(), before, "a task of ours outlived serving");
    common::assert_no_containers(&sandbox).await;
}
