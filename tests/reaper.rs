//! The startup reaper removes what a crashed server left behind, and only that.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, InspectContainerOptions};
use mcp_python_executor::config::DEFAULT_IMAGE;
use mcp_python_executor::sandbox::{LABEL_DEADLINE, LABEL_OWNER, reap_expired};

async fn labelled_container(docker: &bollard::Docker, name: &str, deadline: u64) {
    let body = ContainerCreateBody {
        image: Some(DEFAULT_IMAGE.to_string()),
        cmd: Some(vec!["true".to_string()]),
        labels: Some(HashMap::from([
            (LABEL_OWNER.to_string(), "crashed-instance".to_string()),
            (LABEL_DEADLINE.to_string(), deadline.to_string()),
        ])),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    docker
        .create_container(Some(options), body)
        .await
        .expect("create test container");
}

async fn exists(docker: &bollard::Docker, name: &str) -> bool {
    docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .is_ok()
}

#[tokio::test]
async fn the_reaper_removes_expired_containers_and_spares_live_ones() {
    let docker = common::docker().negotiate_version().await.unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let expired = format!("reaper-test-expired-{suffix}");
    let live = format!("reaper-test-live-{suffix}");
    labelled_container(&docker, &expired, now - 60).await;
    labelled_container(&docker, &live, now + 3).await;

    let reaped = reap_expired(&docker, SystemTime::now(), None)
        .await
        .unwrap();

    assert!(reaped >= 1);
    assert!(
        !exists(&docker, &expired).await,
        "expired container was not reaped"
    );
    assert!(
        exists(&docker, &live).await,
        "a live container of another instance was removed"
    );
    // Once its deadline passes, the live one goes too. (Reaping at a made-up future time
    // would also remove the live containers of tests running beside this one.)
    tokio::time::sleep(Duration::from_secs(5)).await;
    reap_expired(&docker, SystemTime::now(), None)
        .await
        .unwrap();
    assert!(!exists(&docker, &live).await);
}
