//! The stdio edge of the MCP channel: a line gateway between the client's pipes and rmcp.
//!
//! rmcp's stdio transport drops, without a word to the client, a line that is not JSON (a lone
//! surrogate such as `"\ud800"` is enough) or that is longer than its 16 MiB frame, so a client
//! that sent such a request would wait for an answer until its own timeout. This gateway reads
//! stdin line by line under that same bound and passes every well-formed line on to rmcp
//! unchanged. A malformed or oversized line that still shows a request `id` gets a JSON-RPC
//! error naming the problem; anything else is logged and dropped, as the MCP SDKs do, so that
//! garbage never starts an error storm. The gateway is also the only writer of stdout: rmcp's
//! messages and its own errors go out as whole lines, never interleaved.

use serde_json::json;

use super::intake::{MAX_REQUEST_VALUES, Refused, check_values, request_id};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The longest line passed on, its newline not counted: one byte under rmcp's own frame
/// limit, which counts the newline, so nothing rmcp would drop gets through. A line of exactly
/// 16 MiB is answered here.
pub const MAX_LINE: usize = rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH - 1;

/// JSON-RPC's code for input that is not valid JSON.
const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's code for a request the server will not take (here: too large).
const INVALID_REQUEST: i64 = -32600;
/// How much of an oversized line is kept to look for its request id.
const ID_WINDOW: usize = 64 << 10;

/// A running gateway: hand [`Gateway::transport`] to rmcp, await [`Gateway::finished`] after the
/// session ends so the last answers reach the client before the process exits.
pub struct Gateway {
    /// rmcp's side of the channel: it reads requests from the first half, writes to the second.
    pub transport: (ReadHalf<DuplexStream>, WriteHalf<DuplexStream>),
    /// Ends once rmcp has closed its side and every line has been written and flushed.
    pub finished: JoinHandle<()>,
}

/// Starts the gateway between `input` (the client's requests) and `output` (our answers).
pub fn gateway<R, W>(input: R, output: W) -> Gateway
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (from_rmcp, to_rmcp) = tokio::io::split(ours);
    let (lines, outgoing) = mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(forward_requests(
        BufReader::new(input),
        to_rmcp,
        lines.clone(),
    ));
    tokio::spawn(collect_answers(BufReader::new(from_rmcp), lines));
    Gateway {
        transport: tokio::io::split(theirs),
        finished: tokio::spawn(write_lines(outgoing, output)),
    }
}

/// Reads the client's lines and sends the good ones to rmcp; answers the bad ones it can.
async fn forward_requests<R: AsyncBufRead + Unpin>(
    mut input: R,
    mut to_rmcp: WriteHalf<DuplexStream>,
    answers: mpsc::Sender<Vec<u8>>,
) {
    let mut line = Vec::new();
    loop {
        let read = match read_line(&mut input, &mut line).await {
            Ok(read) => read,
            Err(error) => {
                tracing::error!("cannot read MCP requests from stdin: {error}");
                break;
            }
        };
        let reply = match read {
            Line::Eof => break,
            Line::Complete if line.iter().all(u8::is_ascii_whitespace) => None,
            // Parsed whole (not skimmed: skimming would let a lone surrogate through to rmcp)
            // and its values counted, without building anything (`intake`).
            Line::Complete => match check_values(&line, MAX_REQUEST_VALUES) {
                Ok(()) => {
                    line.push(b'\n');
                    if to_rmcp.write_all(&line).await.is_err() {
                        break;
                    }
                    None
                }
                Err(refused @ Refused::TooManyValues) => {
                    error_reply(&line, INVALID_REQUEST, refused.to_string())
                }
                Err(Refused::NotJson(error)) => {
                    let hint = if error.contains("escape") {
                        " (strings must be valid Unicode: a lone surrogate such as \\ud800 is not)"
                    } else {
                        ""
                    };
                    let message = format!("request is not valid JSON: {error}{hint}");
                    error_reply(&line, PARSE_ERROR, message)
                }
            },
            Line::Oversized(size) => {
                let message = format!(
                    "request too large: a {size}-byte message is over the {MAX_LINE}-byte limit \
                     of this server's stdio channel; send less code or input per call"
                );
                error_reply(&line, INVALID_REQUEST, message)
            }
        };
        if let Some(reply) = reply
            && answers.send(reply).await.is_err()
        {
            break;
        }
        line.clear();
    }
    // The EOF that ends the MCP session. Dropping the half is not enough: the other half of the
    // same duplex stays open in `collect_answers`.
    let _ = to_rmcp.shutdown().await;
}

/// Copies rmcp's messages, one whole line at a time, to the writer.
async fn collect_answers<R: AsyncBufRead + Unpin>(
    mut from_rmcp: R,
    answers: mpsc::Sender<Vec<u8>>,
) {
    loop {
        let mut message = Vec::new();
        match from_rmcp.read_until(b'\n', &mut message).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if answers.send(message).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// The only writer of stdout.
async fn write_lines<W: AsyncWrite + Unpin>(mut lines: mpsc::Receiver<Vec<u8>>, mut output: W) {
    while let Some(mut line) = lines.recv().await {
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if let Err(error) = async {
            output.write_all(&line).await?;
            output.flush().await
        }
        .await
        {
            tracing::error!("cannot write MCP answers to stdout: {error}");
            return;
        }
    }
}

/// What one call of [`read_line`] found.
#[derive(Debug, PartialEq)]
enum Line {
    /// A whole line is in the buffer, without its newline.
    Complete,
    /// A line of this many bytes was skipped; the buffer holds its first [`ID_WINDOW`] bytes.
    Oversized(usize),
    /// The input ended (a trailing line without newline is delivered first).
    Eof,
}

/// Reads one line into `line`, keeping memory bounded whatever the client sends.
async fn read_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<Line> {
    let mut size = 0usize;
    loop {
        let chunk = input.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match size {
                0 => Line::Eof,
                size if size > MAX_LINE => Line::Oversized(size),
                _ => Line::Complete,
            });
        }
        let (taken, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(end) => (end, true),
            None => (chunk.len(), false),
        };
        let room = if size + taken > MAX_LINE {
            ID_WINDOW
        } else {
            MAX_LINE
        };
        let keep = taken.min(room.saturating_sub(line.len()));
        line.extend_from_slice(&chunk[..keep]);
        size += taken;
        input.consume(taken + usize::from(done));
        if size > MAX_LINE {
            line.truncate(ID_WINDOW);
        }
        if done {
            if line.ends_with(b"\r") {
                line.pop();
            }
            return Ok(if size > MAX_LINE {
                Line::Oversized(size)
            } else {
                Line::Complete
            });
        }
    }
}

/// A JSON-RPC error for `line`, if it shows a request id; `None` means log and drop.
fn error_reply(line: &[u8], code: i64, message: String) -> Option<Vec<u8>> {
    let Some(id) = request_id(line) else {
        tracing::warn!("dropping a message without a request id: {message}");
        return None;
    };
    tracing::warn!(%id, "{message}");
    let reply = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    Some(serde_json::to_vec(&reply).expect("a JSON value serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_split_on_newlines() {
        let long = vec![b'a'; MAX_LINE + 10];
        let mut input = Vec::new();
        input.extend_from_slice(b"first\r\n");
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nlast");
        let mut reader = BufReader::with_capacity(4096, input.as_slice());
        let mut line = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut line).await.unwrap(),
            Line::Complete
        );
        assert_eq!(line, b"first");
        line.clear();
        let oversized = read_line(&mut reader, &mut line).await.unwrap();
        assert_eq!(oversized, Line::Oversized(MAX_LINE + 10));
        assert_eq!(line.len(), ID_WINDOW);
        line.clear();
        assert_eq!(
            read_line(&mut reader, &mut line).await.unwrap(),
            Line::Complete
        );
        assert_eq!(line, b"last");
        line.clear();
        assert_eq!(read_line(&mut reader, &mut line).await.unwrap(), Line::Eof);
    }
}
