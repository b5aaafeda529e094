//! The attach protocol of one container: create, attach before start (so no output is lost)
//! and start, all bounded; then the payload in and the multiplexed output out, the runner's
//! trailers picked out of both streams, and the exit status -- from the trailers when the
//! runner wrote them, else from Docker's wait (and, after a SIGKILL, its OOM record).
//! Used by executions (cold and warm) and installs alike; knows nothing of pools or slots.

use std::pin::pin;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{AttachContainerOptions, CreateContainerOptions};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::guard::ContainerGuard;
use super::protocol::{Bundle, KILLED, Trailer};
use super::types::{RunOutcome, START_TIMEOUT, SandboxError, Stream};
use crate::engine::{DockerError, classify};

/// Create, attach, start, stream `payload` in and the output out to `on_output`, wait.
///
/// The timeout covers everything after start; a container still running then is reported as
/// timed out (the caller's guard kills and removes it).
pub async fn run_attached(
    docker: &Docker,
    guard: &ContainerGuard,
    spec: ContainerCreateBody,
    payload: &[u8],
    timeout: Duration,
    on_output: &mut (dyn FnMut(Stream, &[u8]) + Send),
) -> Result<RunOutcome, SandboxError> {
    let image = spec.image.clone().unwrap_or_default();
    let name = guard.name();
    let streams = start_attached(docker, guard, spec).await?;
    let delivery = Delivery {
        payload,
        timeout,
        token: None,
        max_bundle: 0,
    };
    stream_and_wait(docker, name, &image, streams, delivery, on_output).await
}

/// Create, attach (before start, so no output is lost) and start, bounded by
/// [`START_TIMEOUT`]. The container's program is then running, waiting for its stdin.
pub(super) async fn start_attached(
    docker: &Docker,
    guard: &ContainerGuard,
    spec: ContainerCreateBody,
) -> Result<AttachContainerResults, SandboxError> {
    let image = spec.image.clone().unwrap_or_default();
    let name = guard.name();
    // Taken here, before the request is even sent, so no removal can come first.
    let held = guard
        .create_gate()
        .try_lock_owned()
        .expect("a guard's container is created once");
    let starting = async {
        create(docker, name, spec, held, &image).await?;
        let attach = AttachContainerOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            stream: true,
            ..Default::default()
        };
        let streams = docker
            .attach_container(name, Some(attach))
            .await
            .map_err(|e| classify(e, "attach to the container", &image))?;
        docker
            .start_container(name, None)
            .await
            .map_err(|e| classify(e, "start the container", &image))?;
        Ok(streams)
    };
    tokio::time::timeout(START_TIMEOUT, starting)
        .await
        .map_err(|_| DockerError::Failed {
            action: "start the container",
            message: format!(
                "no answer within {} s (is the runtime healthy? see `docker info`)",
                START_TIMEOUT.as_secs()
            ),
            source: None,
        })?
}

/// Creates the container `name`, holding the guard's create gate (`held`) until the request
/// is over.
///
/// The create request runs to its end even when this call is cancelled or timed out (the
/// guard then removes what it made): an engine that sees its client go mid-create may keep a
/// half-made container (Podman 4.3 then fails every later list).
async fn create(
    docker: &Docker,
    name: &str,
    spec: ContainerCreateBody,
    held: tokio::sync::OwnedMutexGuard<()>,
    image: &str,
) -> Result<(), SandboxError> {
    let options = CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let create = {
        let docker = docker.clone();
        tokio::spawn(async move {
            let created = docker.create_container(Some(options), spec).await;
            drop(held);
            created
        })
    };
    create
        .await
        .map_err(|e| DockerError::Failed {
            action: "create the container",
            message: e.to_string(),
            source: None,
        })?
        .map_err(|e| classify(e, "create the container", image))?;
    Ok(())
}

/// What goes into a started container, and how long its program may take.
pub(super) struct Delivery<'a> {
    /// Everything the container's stdin gets.
    pub payload: &'a [u8],
    /// Counted from the moment the payload starts to go in.
    pub timeout: Duration,
    /// The runner's trailer token, when the container runs the runner.
    pub token: Option<&'a str>,
    /// Largest bundle of returned files accepted after the stdout trailer.
    pub max_bundle: usize,
}

/// Streams the payload into a started container and its output out to `on_output` until the
/// program ends or the timeout passes, then reads the exit status.
///
/// With a token, the container runs the runner, which ends each stream with a trailer
/// carrying the exit status: once both trailers are in, the program is over and the status is
/// known without waiting for the container to stop. Without one (an install), or when a
/// program never reaches its trailer (killed, `os._exit`), the end of the output and Docker's
/// wait decide.
pub(super) async fn stream_and_wait(
    docker: &Docker,
    name: &str,
    image: &str,
    streams: AttachContainerResults,
    delivery: Delivery<'_>,
    on_output: &mut (dyn FnMut(Stream, &[u8]) + Send),
) -> Result<RunOutcome, SandboxError> {
    let Delivery {
        payload,
        timeout,
        token,
        max_bundle,
    } = delivery;
    let started = Instant::now();
    let mut input = streams.input;
    let mut output = streams.output;
    let mut trailers = token.map(|t| (Trailer::new(t, max_bundle), Trailer::new(t, 0)));
    let write = async move {
        // The program may exit without reading its stdin; a broken pipe is not an error.
        let _ = input.write_all(payload).await;
        let _ = input.shutdown().await;
    };
    let read = async {
        let Some((out, err)) = trailers.as_mut() else {
            while let Some(item) = output.next().await {
                if let Some((stream, message)) = chunk(item, image)? {
                    on_output(stream, &message);
                }
            }
            return Ok::<_, DockerError>(None);
        };
        let ended = until_trailers(&mut output, out, err, image, on_output).await?;
        Ok(out
            .status()
            .filter(|_| ended)
            .map(|status| (status, out.oom())))
    };
    let streamed = tokio::time::timeout(timeout, drive_until(read, write)).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let Ok(ended) = streamed else {
        return Ok(timed_out(trailers, on_output, duration_ms));
    };
    let (exit_code, oom_killed) = final_status(docker, name, image, ended?).await?;
    let bundle = trailers.map_or(Bundle::None, |(mut out, _)| out.take_bundle());
    Ok(RunOutcome {
        exit_code,
        timed_out: false,
        oom_killed,
        duration_ms,
        bundle,
    })
}

/// The outcome of a program still running at its timeout (its guard kills it). What it
/// printed before is output too.
fn timed_out(
    mut trailers: Option<(Trailer, Trailer)>,
    on_output: &mut (dyn FnMut(Stream, &[u8]) + Send),
    duration_ms: u64,
) -> RunOutcome {
    if let Some((out, err)) = trailers.as_mut() {
        out.finish(&mut |bytes| on_output(Stream::Stdout, bytes));
        err.finish(&mut |bytes| on_output(Stream::Stderr, bytes));
    }
    RunOutcome {
        exit_code: KILLED,
        timed_out: true,
        oom_killed: false,
        duration_ms,
        bundle: Bundle::None,
    }
}

/// The exit status of a program whose output ended, and whether the OOM killer struck: from
/// its trailer (status, and the runner's OOM mark) when it wrote one, else from Docker.
async fn final_status(
    docker: &Docker,
    name: &str,
    image: &str,
    trailer: Option<(i64, bool)>,
) -> Result<(i64, bool), SandboxError> {
    match trailer {
        // The runner read the container's memory cgroup: the OOM killer struck.
        Some((KILLED, true)) => Ok((KILLED, true)),
        // A child killed by SIGKILL may still have met the OOM killer where the runner cannot
        // read the cgroup (gVisor): the supervisor exits with the same status right after its
        // trailer, and the engine's record of the container tells.
        Some((KILLED, false)) => exit_status(docker, name, image).await,
        Some((status, _)) => Ok((status, false)),
        None => exit_status(docker, name, image).await,
    }
}

/// One item of a container's attach stream as (stream, bytes); `None` for what is neither
/// stdout nor stderr.
fn chunk(
    item: Result<LogOutput, bollard::errors::Error>,
    image: &str,
) -> Result<Option<(Stream, bytes::Bytes)>, DockerError> {
    match item {
        Ok(LogOutput::StdOut { message }) => Ok(Some((Stream::Stdout, message))),
        Ok(LogOutput::StdErr { message }) => Ok(Some((Stream::Stderr, message))),
        Ok(_) => Ok(None),
        Err(error) => Err(classify(error, "read the output", image)),
    }
}

/// Passes a runner's output to `on_output` until both of its trailers (`out` on stdout, `err`
/// on stderr) are in: true. False when the stream ends first (what was held back as a
/// possible trailer is passed on then).
pub(super) async fn until_trailers(
    output: &mut AttachOutput,
    out: &mut Trailer,
    err: &mut Trailer,
    image: &str,
    on_output: &mut (dyn FnMut(Stream, &[u8]) + Send),
) -> Result<bool, DockerError> {
    while let Some(item) = output.next().await {
        let Some((stream, message)) = chunk(item, image)? else {
            continue;
        };
        let trailer = if stream == Stream::Stdout {
            &mut *out
        } else {
            &mut *err
        };
        trailer.push(&message, &mut |bytes| on_output(stream, bytes));
        if out.status().is_some() && err.status().is_some() {
            return Ok(true);
        }
    }
    out.finish(&mut |bytes| on_output(Stream::Stdout, bytes));
    err.finish(&mut |bytes| on_output(Stream::Stderr, bytes));
    Ok(false)
}

/// The output half of an attach stream.
pub(super) type AttachOutput = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// The exit code of a container whose output has ended, and whether the OOM killer hit it.
pub(super) async fn exit_status(
    docker: &Docker,
    name: &str,
    image: &str,
) -> Result<(i64, bool), SandboxError> {
    let code = match docker.wait_container(name, None).next().await {
        Some(Ok(response)) => response.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(error)) => return Err(classify(error, "wait for the container", image).into()),
        None => {
            return Err(DockerError::Failed {
                action: "wait for the container",
                message: "the wait ended without a status".to_string(),
                source: None,
            }
            .into());
        }
    };
    // Only a SIGKILL can be the OOM killer's; skip the extra round trip otherwise.
    if code != KILLED {
        return Ok((code, false));
    }
    let state = docker
        .inspect_container(name, None)
        .await
        .map_err(|e| classify(e, "inspect the container", image))?
        .state;
    Ok((code, state.and_then(|s| s.oom_killed).unwrap_or(false)))
}

/// Polls `read` to completion while also driving `write`, which may finish first or never.
async fn drive_until<R, W>(read: R, write: W) -> R::Output
where
    R: Future,
    W: Future<Output = ()>,
{
    let mut read = pin!(read);
    let mut write = pin!(write);
    let mut written = false;
    loop {
        tokio::select! {
            output = &mut read => return output,
            () = &mut write, if !written => written = true,
        }
    }
}
