//! The warm pool: calls run in containers started ahead of time, each used for exactly one
//! call, with the same limits and results as the cold path; the pool refills, follows the
//! current image, recycles old containers and leaves nothing behind.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use mcp_python_executor::sandbox::{ExecutionRequest, Sandbox};

/// Prints the id of the container the code runs in (cgroup v1 and v2 layouts).
const WHO_AM_I: &str = "import re\n\
text = open('/proc/self/cgroup').read() + open('/proc/self/mountinfo').read()\n\
print(re.search(r'[0-9a-f]{64}', text).group(0))";

/// A sandbox with its pool running; each test shuts it down (draining the pool) at its end,
/// and whatever a failing test leaves is swept when it drops.
fn pooled(flags: &[&str]) -> TestSandbox {
    let sandbox = sandbox_with(flags);
    sandbox.start_pool();
    sandbox
}

async fn until_ready(sandbox: &Sandbox, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while sandbox.pool_ready() < n {
        assert!(
            Instant::now() < deadline,
            "the pool never reached {n} ready containers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sandbox's container ids once none of `gone` is among them (removals finish in the
/// background), or a failure after 30 s.
async fn ids_without(sandbox: &Sandbox, gone: &HashSet<String>) -> HashSet<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids = ids_of(sandbox).await;
        if ids.is_disjoint(gone) {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "{gone:?} still present in {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ids_of(sandbox: &Sandbox) -> HashSet<String> {
    let docker = docker().negotiate_version().await.unwrap();
    let mut ids = HashSet::new();
    for name in containers_of(sandbox).await {
        let inspected = docker
            .inspect_container(name.trim_start_matches('/'), None)
            .await;
        if let Some(id) = inspected.ok().and_then(|c| c.id) {
            ids.insert(id);
        }
    }
    ids
}

#[tokio::test]
async fn a_call_takes_a_warm_container_which_is_never_used_again() {
    let sandbox = pooled(&["--pool-size", "2"]);
    until_ready(&sandbox, 2).await;
    let warm = ids_of(&sandbox).await;
    assert_eq!(warm.len(), 2, "two started containers wait for calls");

    let first = run(&sandbox, WHO_AM_I).await;
    let first_id = first.stdout.trim().to_string();
    assert!(
        warm.contains(&first_id),
        "{first_id} is not one of {warm:?}"
    );

    until_ready(&sandbox, 2).await;
    let second = run(&sandbox, WHO_AM_I).await;
    let second_id = second.stdout.trim().to_string();
    assert_ne!(first_id, second_id, "a container is used for one call only");
    ids_without(&sandbox, &HashSet::from([first_id])).await;
    sandbox.shutdown(Duration::from_secs(30)).await;
    assert!(
        containers_of(&sandbox).await.is_empty(),
        "shutdown drains the pool"
    );
}

#[tokio::test]
async fn warm_calls_keep_the_cold_paths_promises() {
    let sandbox = pooled(&["--pool-size", "2", "--timeout", "2", "--max-output", "1k"]);
    until_ready(&sandbox, 2).await;
    let request = ExecutionRequest::new("import sys\nprint(input()[::-1])\nsys.exit(3)")
        .with_input(["olleh"]);
    let result = try_run(&sandbox, request).await.unwrap();
    assert_eq!(result.stdout, "hello\n");
    assert_eq!(result.exit_code, 3);

    until_ready(&sandbox, 2).await;
    let written = run(&sandbox, "open('/tmp/left', 'w').write('x')").await;
    assert!(!written.failed(), "{written:?}");
    until_ready(&sandbox, 2).await;
    let fresh = run(&sandbox, "import os; print(os.path.exists('/tmp/left'))").await;
    assert_eq!(fresh.stdout, "False\n", "no state crosses calls");

    until_ready(&sandbox, 2).await;
    let flood = run(&sandbox, "print('x' * 5000)").await;
    assert!(flood.truncated);

    // The clock starts when the payload arrives, not when the container was started.
    until_ready(&sandbox, 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let quick = run(&sandbox, "print('in time')").await;
    assert_eq!(quick.stdout, "in time\n");
    assert!(!quick.timed_out);

    let slow = run(
        &sandbox,
        "import time\nprint('started', flush=True)\ntime.sleep(60)",
    )
    .await;
    assert!(slow.timed_out, "{slow:?}");
    assert_eq!(slow.stdout, "started\n");
    assert!(slow.duration_ms >= 2000);

    let user = run(&sandbox, "import os; print(os.getuid())").await;
    assert!(
        common::is_call_uid(user.stdout.trim().parse().unwrap()),
        "{user:?}"
    );
    sandbox.shutdown(Duration::from_secs(30)).await;
    assert!(containers_of(&sandbox).await.is_empty());
}

#[tokio::test]
async fn an_empty_pool_never_makes_a_call_wait() {
    let sandbox = pooled(&["--pool-size", "1", "--concurrency", "4"]);
    until_ready(&sandbox, 1).await;
    let calls = (0..4).map(|i| {
        let sandbox = sandbox.clone();
        async move { run(&sandbox, &format!("print({i})")).await }
    });
    let results = futures::future::join_all(calls).await;
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.stdout, format!("{i}\n"));
    }
    sandbox.shutdown(Duration::from_secs(30)).await;
    assert!(containers_of(&sandbox).await.is_empty());
}

#[tokio::test]
async fn warm_containers_killed_or_removed_while_idle_are_never_handed_out() {
    let sandbox = pooled(&["--pool-size", "2"]);
    until_ready(&sandbox, 2).await;
    let warm: Vec<String> = ids_of(&sandbox).await.into_iter().collect();
    assert_eq!(warm.len(), 2);
    // As a daemon restart or an operator's cleanup would: one killed, one removed.
    for (verb, id) in [("kill", &warm[0]), ("rm", &warm[1])] {
        let mut args = vec![verb];
        if verb == "rm" {
            args.push("--force");
        }
        args.push(id);
        let done = std::process::Command::new("docker")
            .args(&args)
            .output()
            .unwrap();
        assert!(done.status.success(), "docker {verb}: {done:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    for _ in 0..2 {
        let result = run(&sandbox, &format!("{WHO_AM_I}\nprint(6 * 7)")).await;
        let mut lines = result.stdout.lines();
        let id = lines.next().unwrap_or_default().to_string();
        assert!(!warm.contains(&id), "ran in a dead container: {result:?}");
        assert_eq!(lines.next(), Some("42"), "{result:?}");
        assert_eq!(result.exit_code, 0, "{result:?}");
    }
    sandbox.shutdown(Duration::from_secs(30)).await;
    assert!(containers_of(&sandbox).await.is_empty());
}

#[tokio::test]
async fn pool_size_zero_starts_nothing_ahead() {
    let sandbox = pooled(&["--pool-size", "0"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(containers_of(&sandbox).await.is_empty());
    assert_eq!(run(&sandbox, "print('cold')").await.stdout, "cold\n");
    assert_no_containers(&sandbox).await;
}

#[tokio::test]
async fn a_new_environment_image_replaces_the_warm_containers() {
    let sandbox = pooled(&["--pool-size", "2"]);
    until_ready(&sandbox, 2).await;
    let old = ids_of(&sandbox).await;

    // Another tag of the same image stands in for an installed environment.
    let tag = format!(
        "mcp-python-executor/env:pool-test-{}",
        uuid::Uuid::new_v4().simple()
    );
    let docker = docker().negotiate_version().await.unwrap();
    let (repo, version) = tag.split_once(':').unwrap();
    docker
        .tag_image(
            &sandbox.config().image,
            Some(bollard::query_parameters::TagImageOptions {
                repo: Some(repo.to_string()),
                tag: Some(version.to_string()),
            }),
        )
        .await
        .unwrap();
    sandbox.set_current_image(&tag);
    let result = run(&sandbox, WHO_AM_I).await;
    let id = result.stdout.trim().to_string();
    assert!(!old.contains(&id), "a container of the old image was used");
    until_ready(&sandbox, 2).await;
    let mut gone = old.clone();
    gone.insert(id);
    let now = ids_without(&sandbox, &gone).await;
    for id in &now {
        let image = docker
            .inspect_container(id, None)
            .await
            .unwrap()
            .config
            .unwrap()
            .image;
        // Podman names it with its registry (`docker.io/…`), Docker as given.
        let image = image.unwrap_or_default();
        assert_eq!(image.trim_start_matches("docker.io/"), tag, "{image}");
    }
    sandbox.shutdown(Duration::from_secs(30)).await;
    let _ = docker
        .remove_image(
            &tag,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
    assert!(containers_of(&sandbox).await.is_empty());
}

#[tokio::test]
async fn warm_containers_past_their_max_age_are_replaced() {
    let sandbox = pooled(&["--pool-size", "1", "--pool-max-age", "10"]);
    until_ready(&sandbox, 1).await;
    let first = ids_of(&sandbox).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let later = ids_without(&sandbox, &first).await;
    until_ready(&sandbox, 1).await;
    assert!(later.len() <= 1, "{later:?}");
    sandbox.shutdown(Duration::from_secs(30)).await;
    assert!(containers_of(&sandbox).await.is_empty());
}
