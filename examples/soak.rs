//! `make soak`: 1,000 mixed calls at concurrency 16 against the release binary over MCP,
//! reporting failures, leaked containers and the server's peak RSS. A benchmark-style run,
//! not part of `make test`; it exits non-zero on any failure or leak.
//!
//! The mix: quick prints, exceptions, timeouts (the server runs with a 5 s timeout) and
//! 2 MB output floods (twice the cap), each checked for its expected answer.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::json;

const CALLS: usize = 1000;
const CONCURRENCY: usize = 16;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Print,
    Error,
    Timeout,
    Flood,
}

impl Kind {
    fn for_call(i: usize) -> Self {
        match i % 20 {
            0 => Kind::Timeout,
            1 | 2 => Kind::Flood,
            3..=5 => Kind::Error,
            _ => Kind::Print,
        }
    }

    fn code(self, i: usize) -> String {
        match self {
            Kind::Print => format!("print({i} * 2)"),
            Kind::Error => format!("raise ValueError('call {i}')"),
            Kind::Timeout => "while True:\n    pass".to_string(),
            Kind::Flood => "import sys\nsys.stdout.write('x' * (2 << 20))".to_string(),
        }
    }

    fn check(self, i: usize, result: &CallToolResult) -> Result<(), String> {
        let status = result.structured_content.clone().unwrap_or_default();
        let ok = match self {
            Kind::Print => result.is_error == Some(false) && status["exit_code"] == 0,
            Kind::Error => result.is_error == Some(true) && status["exit_code"] == 1,
            Kind::Timeout => result.is_error == Some(true) && status["timed_out"] == true,
            Kind::Flood => status["truncated"] == true && status["exit_code"] == 0,
        };
        ok.then_some(())
            .ok_or_else(|| format!("call {i} ({self:?}): unexpected {status}"))
    }
}

fn labelled_containers() -> usize {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=mcp-python-executor"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .count()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/mcp-python-executor".to_string());
    let before = labelled_containers();
    let command = tokio::process::Command::new(&binary).configure(|cmd| {
        cmd.env("PYEXEC_TIMEOUT", "5")
            .env("PYEXEC_CONCURRENCY", CONCURRENCY.to_string())
            .env("RUST_LOG", "warn");
    });
    let transport = TokioChildProcess::new(command)?;
    let pid = transport.id().expect("server pid");
    let client = Arc::new(().serve(transport).await?);
    let idle_rss = rss_kib(pid, "VmRSS:");

    let started = Instant::now();
    let failures: Vec<String> = futures::stream::iter(0..CALLS)
        .map(|i| {
            let client = client.clone();
            async move {
                let kind = Kind::for_call(i);
                let params = CallToolRequestParams::new("execute_python")
                    .with_arguments(json!({ "code": kind.code(i) }).as_object().unwrap().clone());
                match client.call_tool(params).await {
                    Ok(result) => kind.check(i, &result).err(),
                    Err(error) => Some(format!("call {i} ({kind:?}): {error}")),
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    let elapsed = started.elapsed();
    let peak_rss = rss_kib(pid, "VmHWM:");
    let final_rss = rss_kib(pid, "VmRSS:");
    let Ok(client) = Arc::try_unwrap(client) else {
        anyhow::bail!("calls still hold the client");
    };
    client.cancel().await?;
    let leaked = labelled_containers().saturating_sub(before);

    println!("## soak: {CALLS} calls at concurrency {CONCURRENCY}\n");
    println!("| measure | value |\n| --- | --- |");
    println!("| wall time | {:.1} s |", elapsed.as_secs_f64());
    println!("| calls/s | {:.1} |", CALLS as f64 / elapsed.as_secs_f64());
    println!("| failures | {} |", failures.len());
    println!("| leaked containers | {leaked} |");
    println!("| server RSS idle | {:.1} MiB |", idle_rss as f64 / 1024.0);
    println!(
        "| server RSS after | {:.1} MiB |",
        final_rss as f64 / 1024.0
    );
    println!("| server peak RSS | {:.1} MiB |", peak_rss as f64 / 1024.0);
    for failure in failures.iter().take(20) {
        println!("- {failure}");
    }
    if !failures.is_empty() || leaked > 0 {
        anyhow::bail!(
            "soak failed: {} failures, {leaked} leaked containers",
            failures.len()
        );
    }
    Ok(())
}
