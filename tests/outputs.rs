//! What comes back besides text, through the built binary over MCP as a client sees it:
//! matplotlib figures as images, files from /tmp/outputs as resources within the limits,
//! hostile files (links, FIFOs, odd names) never followed, `--output-dir` keeping to the
//! call's own folder, `--workspace` read-only, answers sized for a model, and image bombs
//! left out and named while the server's memory stays bounded.
//!
//! Matplotlib comes from the package index (through the proxy, with PIP_CERT) into one shared
//! environment tag, installed by the first test that needs it and found present afterwards.

mod common;

use base64::Engine;
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock, ResourceContents};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-python-executor");
/// Environment with matplotlib, shared by the tests (and kept between runs, as a cache).
const MPL_TAG: &str = "mcp-python-executor/env:test-matplotlib";

/// Installs matplotlib into [`MPL_TAG`] unless it is there (then this costs one inspect).
fn ensure_matplotlib() {
    let out = std::process::Command::new(BINARY)
        .args(["packages", "install", "matplotlib"])
        .env("PYEXEC_ENV_TAG", MPL_TAG)
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "matplotlib installs from the index: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn server(env: &[(&str, &str)]) -> RunningService<RoleClient, ()> {
    let command = tokio::process::Command::new(BINARY).configure(|cmd| {
        cmd.env("PYEXEC_POOL_SIZE", "0")
            .env("PYEXEC_ENV_TAG", MPL_TAG)
            .stderr(std::process::Stdio::null());
        for (key, value) in env {
            cmd.env(key, value);
        }
    });
    ().serve(TokioChildProcess::new(command).expect("server starts"))
        .await
        .expect("MCP handshake")
}

async fn call(client: &RunningService<RoleClient, ()>, code: &str) -> CallToolResult {
    let params = CallToolRequestParams::new("execute_python")
        .with_arguments(json!({ "code": code }).as_object().unwrap().clone());
    client.call_tool(params).await.expect("tools/call answered")
}

fn texts(result: &CallToolResult) -> Vec<&str> {
    result
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text(t) => Some(t.text.as_str()),
            _ => None,
        })
        .collect()
}

/// The decoded bytes and MIME type of each image block.
fn images(result: &CallToolResult) -> Vec<(Vec<u8>, String)> {
    result
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Image(image) => Some((
                base64::engine::general_purpose::STANDARD
                    .decode(&image.data)
                    .expect("base64"),
                image.mime_type.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn resources(result: &CallToolResult) -> Vec<&ResourceContents> {
    result
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Resource(embedded) => Some(&embedded.resource),
            _ => None,
        })
        .collect()
}

fn left_out_line(result: &CallToolResult) -> Option<&str> {
    texts(result)
        .into_iter()
        .find(|t| t.starts_with("Left out: "))
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

#[tokio::test]
async fn figures_come_back_as_png_images_and_only_when_drawn() {
    ensure_matplotlib();
    let client = server(&[]).await;

    let shown = call(
        &client,
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()\nprint('shown')",
    )
    .await;
    assert_eq!(shown.is_error, Some(false), "{shown:?}");
    let found = images(&shown);
    assert_eq!(found.len(), 1, "{:?}", texts(&shown));
    assert!(found[0].0.starts_with(PNG_MAGIC));
    assert_eq!(found[0].1, "image/png");
    assert_eq!(texts(&shown)[0], "stdout:\nshown\n");

    // Shown figures, then one left open, in order; a closed one never comes back.
    let several = call(
        &client,
        "import matplotlib.pyplot as plt\n\
         plt.figure(figsize=(2, 2)); plt.plot([1]); plt.show()\n\
         plt.figure(figsize=(3, 2)); plt.bar([1], [2]); plt.show()\n\
         f = plt.figure(); plt.close(f)\n\
         plt.figure(figsize=(4, 2)); plt.plot([3])",
    )
    .await;
    let widths: Vec<u32> = images(&several)
        .iter()
        .map(|(png, _)| u32::from_be_bytes(png[16..20].try_into().unwrap()))
        .collect();
    assert_eq!(widths, [200, 300, 400], "{:?}", texts(&several));

    // Importing matplotlib draws nothing; a program without it never imports it.
    let imported = call(
        &client,
        "import matplotlib.pyplot as plt\nprint('no drawing')",
    )
    .await;
    assert!(images(&imported).is_empty());
    let plain = call(&client, "import sys\nprint('matplotlib' in sys.modules)").await;
    assert_eq!(texts(&plain), ["stdout:\nFalse\n"]);
    assert!(images(&plain).is_empty() && resources(&plain).is_empty());
    client.cancel().await.unwrap();
}

/// In a session each call's figures come back with that call only: shown ones, then those
/// left open (closed afterwards, as a notebook cell's), never again in a later call.
#[tokio::test]
async fn in_a_session_figures_come_back_with_the_call_that_drew_them() {
    ensure_matplotlib();
    let client = server(&[]).await;
    let params = CallToolRequestParams::new("create_session");
    let opened = client.call_tool(params).await.unwrap();
    let id = opened.structured_content.unwrap()["session_id"].clone();
    let in_session = async |code: &str| {
        let params = CallToolRequestParams::new("execute_python").with_arguments(
            json!({ "code": code, "session_id": id })
                .as_object()
                .unwrap()
                .clone(),
        );
        client.call_tool(params).await.unwrap()
    };
    let shown = in_session(
        "import matplotlib.pyplot as plt
plt.figure(figsize=(2, 2)); plt.plot([1]); plt.show()",
    )
    .await;
    assert_eq!(images(&shown).len(), 1, "{:?}", texts(&shown));
    let open = in_session("plt.figure(figsize=(3, 2)); plt.plot([2])").await;
    let widths: Vec<u32> = images(&open)
        .iter()
        .map(|(png, _)| u32::from_be_bytes(png[16..20].try_into().unwrap()))
        .collect();
    assert_eq!(widths, [300], "only this call's figure: {:?}", texts(&open));
    let later = in_session("print(len(plt.get_fignums()))").await;
    assert_eq!(texts(&later), ["stdout:\n0\n"]);
    assert!(images(&later).is_empty(), "nothing drawn, nothing returned");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn files_in_outputs_come_back_as_a_text_resource_and_an_image() {
    ensure_matplotlib();
    let client = server(&[]).await;
    let result = call(
        &client,
        "import matplotlib.pyplot as plt\n\
         plt.plot([1, 2]); plt.savefig('/tmp/outputs/chart.png'); plt.close('all')\n\
         open('/tmp/outputs/table.csv', 'w').write('x,y\\n1,2\\n')\n\
         print('saved')",
    )
    .await;
    let found = images(&result);
    assert_eq!(found.len(), 1, "{:?}", texts(&result));
    assert!(found[0].0.starts_with(PNG_MAGIC));
    let found = resources(&result);
    assert_eq!(found.len(), 1);
    match found[0] {
        ResourceContents::TextResourceContents {
            uri,
            mime_type,
            text,
            ..
        } => {
            assert_eq!(uri, "file:///tmp/outputs/table.csv");
            assert_eq!(mime_type.as_deref(), Some("text/csv"));
            assert_eq!(text, "x,y\n1,2\n");
        }
        other => panic!("a text resource, not {other:?}"),
    }
    assert_eq!(left_out_line(&result), None);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn fifty_files_of_a_mebibyte_stay_within_the_limits_and_the_rest_is_listed() {
    let client = server(&[]).await;
    let result = call(
        &client,
        "import os\n\
         for i in range(50):\n    open(f'/tmp/outputs/blob{i:02}.bin', 'wb').write(os.urandom(1 << 20))",
    )
    .await;
    assert_eq!(result.is_error, Some(false), "{:?}", texts(&result));
    let returned = resources(&result);
    let bytes: usize = returned
        .iter()
        .map(|r| match r {
            ResourceContents::BlobResourceContents { blob, .. } => {
                base64::engine::general_purpose::STANDARD
                    .decode(blob)
                    .unwrap()
                    .len()
            }
            ResourceContents::TextResourceContents { text, .. } => text.len(),
            _ => 0,
        })
        .sum();
    assert!(!returned.is_empty());
    assert!(bytes <= 10 << 20, "{bytes} bytes returned");
    let line = left_out_line(&result).expect("a left-out line");
    assert_eq!(
        returned.len() + line.matches(".bin (").count() + more(line),
        50,
        "{line}"
    );
    assert!(
        line.contains("over the limit for files (--max-files)"),
        "{line}"
    );
    assert!(line.len() < 4096);
    // The whole answer (base64 included) stays near the limit.
    let size = serde_json::to_vec(&result).unwrap().len();
    assert!(size < 15 << 20, "{size} bytes of answer");
    client.cancel().await.unwrap();
}

/// The count in a left-out line's "and N more".
fn more(line: &str) -> usize {
    line.rsplit_once("and ")
        .and_then(|(_, rest)| rest.strip_suffix(" more"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn links_fifos_and_devices_in_outputs_are_never_followed() {
    let client = server(&[]).await;
    let result = call(
        &client,
        "import os\n\
         os.symlink('/etc/passwd', '/tmp/outputs/passwd')\n\
         os.symlink('/etc', '/tmp/outputs/etc')\n\
         os.mkfifo('/tmp/outputs/pipe')\n\
         os.symlink('/dev/zero', '/tmp/outputs/zero')\n\
         os.mkdir('/tmp/outputs/deep')\n\
         os.symlink('/proc/self/environ', '/tmp/outputs/deep/environ')\n\
         open('/tmp/outputs/fine.txt', 'w').write('fine')",
    )
    .await;
    assert_eq!(result.is_error, Some(false), "{:?}", texts(&result));
    let returned = resources(&result);
    assert_eq!(returned.len(), 1, "only the regular file: {returned:?}");
    let line = left_out_line(&result).expect("a left-out line");
    for name in ["passwd", "etc", "pipe", "zero", "deep/environ"] {
        assert!(line.contains(&format!("{name} (")), "{name}: {line}");
    }
    let answer = serde_json::to_string(&result).unwrap();
    assert!(!answer.contains("root:x:0"), "a link was followed");

    // The folder itself swapped for a link to /etc: not entered.
    let swapped = call(
        &client,
        "import os
os.rmdir('/tmp/outputs')
os.symlink('/etc', '/tmp/outputs')",
    )
    .await;
    assert!(resources(&swapped).is_empty(), "{:?}", resources(&swapped));
    let line = left_out_line(&swapped).expect("a left-out line");
    assert!(line.contains("/tmp/outputs (a symbolic link"), "{line}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn with_an_output_dir_files_land_in_the_calls_own_folder_and_nowhere_else() {
    let dir = std::env::temp_dir().join(format!("pyexec-outputs-{}", uuid::Uuid::new_v4()));
    let client = server(&[("PYEXEC_OUTPUT_DIR", dir.to_str().unwrap())]).await;
    let result = call(
        &client,
        "import os\n\
         os.makedirs('/tmp/outputs/sub/..hidden', exist_ok=True)\n\
         open('/tmp/outputs/sub/..hidden/x.csv', 'w').write('1')\n\
         open('/tmp/outputs/a b\\n;c.txt', 'w').write('2')\n\
         open('/tmp/outputs/...', 'w').write('3')\n\
         print('out')",
    )
    .await;
    assert_eq!(result.is_error, Some(false), "{:?}", texts(&result));
    let calls: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(calls.len(), 1, "one folder per call: {calls:?}");
    let call_dir = &calls[0];
    let mut saved: Vec<String> = std::fs::read_dir(call_dir.join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    saved.sort();
    assert_eq!(saved, ["a_b__c.txt", "file", "sub__..hidden__x.csv"]);
    assert_eq!(
        std::fs::read_to_string(call_dir.join("stdout.txt")).unwrap(),
        "out\n"
    );
    let links: Vec<&str> = result
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::ResourceLink(link) => Some(link.uri.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(links.len(), 4, "stdout and three files: {links:?}");
    let prefix = format!("file://{}/", call_dir.display());
    assert!(links.iter().all(|l| l.starts_with(&prefix)), "{links:?}");
    client.cancel().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The finding: 20 calls wrote 236 MB under `--output-dir` in 5.5 s, folders 0755 and files
/// 0644, nothing ever removed. With `--output-dir-max 50m`, twenty calls of 12 MB each (as
/// much as an answer can carry within a client's 16 MiB line once base64-encoded) keep
/// the folder within 50 MiB (the oldest call folders go first), every folder is 0700 and every
/// file 0600, and what the user keeps there beside the call folders is left alone.
#[tokio::test]
async fn the_output_dir_stays_within_its_limit_and_private_to_the_user() {
    let dir = std::env::temp_dir().join(format!("pyexec-outputs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let client = server(&[
        ("PYEXEC_OUTPUT_DIR", dir.to_str().unwrap()),
        ("PYEXEC_OUTPUT_DIR_MAX", "50m"),
        ("PYEXEC_MAX_FILES", "16m"),
    ])
    .await;
    let code = "import os\n\
                for i in range(3):\n    \
                    open('/tmp/outputs/part%d.bin' % i, 'wb').write(os.urandom(4_000_000))\n\
                print('wrote 12 MB')";
    fn walk(path: &std::path::Path, found: &mut Vec<(std::path::PathBuf, std::fs::Metadata)>) {
        for entry in std::fs::read_dir(path).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                walk(&entry.path(), found);
            }
            found.push((entry.path(), meta));
        }
    }
    for round in 0..20 {
        let result = call(&client, code).await;
        assert_eq!(result.is_error, Some(false), "{:?}", texts(&result));
        let mut found = Vec::new();
        walk(&dir, &mut found);
        let total: u64 = found
            .iter()
            .filter(|(_, m)| m.is_file())
            .map(|(_, m)| m.len())
            .sum();
        assert!(
            total <= 50 << 20,
            "round {round}: {} MiB under the output dir",
            total >> 20
        );
        use std::os::unix::fs::PermissionsExt;
        for (path, meta) in &found {
            let mode = meta.permissions().mode() & 0o777;
            if path.ends_with("notes.txt") {
                continue;
            }
            let wanted = if meta.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, wanted, "{}: {mode:o}", path.display());
        }
    }
    let calls = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "notes.txt")
        .count();
    assert_eq!(calls, 4, "four 12 MB calls fit in 50 MiB");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "mine"
    );
    client.cancel().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The red team's follow-up: with `--output-dir-max 1m`, calls that each left 990 one-byte
/// files were counted as a kilobyte each and never pruned, while each took 4 MiB of disk and
/// 990 inodes. The limit counts whole blocks per file and folder: ten calls of 100 tiny files
/// keep at most what 1 MiB of blocks holds (256 entries).
#[tokio::test]
async fn tiny_files_count_as_the_disk_they_take() {
    let dir = std::env::temp_dir().join(format!("pyexec-outputs-{}", uuid::Uuid::new_v4()));
    let client = server(&[
        ("PYEXEC_OUTPUT_DIR", dir.to_str().unwrap()),
        ("PYEXEC_OUTPUT_DIR_MAX", "1m"),
    ])
    .await;
    let code =
        "for i in range(100):\n    open('/tmp/outputs/f%03d' % i, 'w').write('x')\nprint('ok')";
    fn entries(path: &std::path::Path) -> usize {
        std::fs::read_dir(path)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                1 + if e.file_type().unwrap().is_dir() {
                    entries(&e.path())
                } else {
                    0
                }
            })
            .sum()
    }
    for round in 0..10 {
        let result = call(&client, code).await;
        assert_eq!(result.is_error, Some(false), "{:?}", texts(&result));
        let held = entries(&dir);
        assert!(
            held <= 256,
            "round {round}: {held} files and folders under a 1 MiB limit"
        );
    }
    client.cancel().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_flood_then_a_traceback_fits_the_answer_and_ends_with_the_traceback() {
    // Time enough for 200,000 prints under gVisor too.
    let client = server(&[("PYEXEC_TIMEOUT", "120")]).await;
    let result = call(
        &client,
        "import sys\n\
         for i in range(200_000):\n    print('line', i)\n\
         sys.stderr.write('e' * 2_000_000 + '\\n')\n\
         raise ValueError('the end')",
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    let shown = texts(&result);
    let total: usize = shown.iter().map(|t| t.len()).sum();
    assert!(total <= (64 << 10) + 512, "{total} bytes of text");
    let stdout = shown[0];
    assert!(stdout.starts_with("stdout:\nline 0\nline 1\n"));
    assert!(
        stdout.ends_with("line 199999\n"),
        "the end of stdout is kept"
    );
    assert!(stdout.contains(" lines, ") && stdout.contains(" bytes of output left out here"));
    let stderr = shown[1];
    assert!(
        stderr.ends_with("ValueError: the end\n"),
        "{}",
        &stderr[stderr.len() - 300..]
    );
    assert!(stderr.contains("Traceback (most recent call last):"));
    assert_eq!(
        result.structured_content.as_ref().unwrap()["truncated"],
        true
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_workspace_is_readable_not_writable_and_announced() {
    let dir = std::env::temp_dir().join(format!("pyexec-workspace-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("data.csv"), "a,b\n1,2\n").unwrap();
    // World-readable, as a user's own data folder would be to the call's uid.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let client = server(&[("PYEXEC_WORKSPACE", dir.to_str().unwrap())]).await;
    let tools = client.list_all_tools().await.unwrap();
    let description = tools
        .iter()
        .find(|t| t.name == "execute_python")
        .and_then(|t| t.description.as_deref())
        .unwrap()
        .to_string();
    assert!(description.contains("/workspace"), "{description}");
    let result = call(
        &client,
        "print(open('/workspace/data.csv').read(), end='')\n\
         try:\n    open('/workspace/new', 'w')\nexcept OSError as e:\n    print('refused', e.errno)",
    )
    .await;
    // EROFS; gVisor says EACCES. Either way nothing is written.
    let shown = texts(&result);
    assert!(
        shown == ["stdout:\na,b\n1,2\nrefused 30\n"]
            || shown == ["stdout:\na,b\n1,2\nrefused 13\n"],
        "{shown:?}"
    );
    client.cancel().await.unwrap();
    assert!(!dir.join("new").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_workspace_that_exposes_the_host_is_refused_at_start() {
    let home = std::env::var("HOME").unwrap();
    for (dir, why) in [
        ("/", "whole host"),
        (home.as_str(), "home folder itself"),
        ("/var/run", "Docker socket"),
    ] {
        let out = std::process::Command::new(BINARY)
            .args(["--workspace", dir])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{dir} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{dir}: {stderr}");
    }
}

/// Writes image bombs to /tmp/outputs: each a few hundred bytes (or a few hundred KiB of
/// zeros) that declare far more pixels than their size, or stop halfway. Those of the red-team
/// report (a 134-byte progressive grey JPEG of 16384 x 16384, eight times over), and their PNG,
/// GIF and WebP equivalents, plus the costliest ones still under the limits: a truncated
/// baseline JPEG and a truncated PNG of 6000 x 6000.
const IMAGE_BOMBS: &str = r#"
import struct, zlib

def jpeg(sof, width, height, components):
    out = b'\xff\xd8' + b'\xff\xdb\x00\x43\x00' + b'\x01' * 64
    out += b'\xff' + bytes([sof]) + struct.pack('>HBHHB', 8 + 3 * components, 8, height, width, components)
    out += b''.join(bytes([i, 0x11, 0]) for i in range(1, components + 1))
    out += b'\xff\xc4\x00\x14\x00\x01' + b'\x00' * 16
    out += b'\xff\xc4\x00\x14\x10\x01' + b'\x00' * 16
    out += b'\xff\xda' + struct.pack('>HB', 6 + 2 * components, components)
    out += b''.join(bytes([i, 0]) for i in range(1, components + 1))
    return out + b'\x00' * 11

def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

def png(side, cut=False):
    packer = zlib.compressobj(9)
    row = bytes(side + 1)
    data = b''.join(packer.compress(row) for _ in range(side)) + packer.flush()
    if cut:
        data = data[: len(data) // 2]
    head = chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 8, 0, 0, 0, 0))
    return b'\x89PNG\r\n\x1a\n' + head + chunk(b'IDAT', data) + (b'' if cut else chunk(b'IEND', b''))

gif = (b'GIF89a' + struct.pack('<HHBBB', 8192, 8192, 0x80, 0, 0) + b'\x00\x00\x00\xff\xff\xff'
       + b'\x2c' + struct.pack('<HHHHB', 0, 0, 8192, 8192, 0) + b'\x02\x02\x4c\x01')
bits = 8191 | 8191 << 14
vp8l = b'\x2f' + struct.pack('<I', bits) + b'\x00' * 16
webp = b'RIFF' + struct.pack('<I', 4 + 8 + len(vp8l)) + b'WEBP' + b'VP8L' + struct.pack('<I', len(vp8l)) + vp8l

bombs = {
    'report-1.jpg': jpeg(0xC2, 16384, 16384, 1),
    'report-2.jpg': jpeg(0xC2, 16384, 16384, 1),
    'progressive.jpg': jpeg(0xC2, 6000, 6000, 3),
    'baseline-cut.jpg': jpeg(0xC0, 6000, 6000, 3),
    'zeros.png': png(16384),
    'zeros-cut.png': png(6000, cut=True),
    'screen.gif': gif,
    'lossless.webp': webp,
}
for name, data in bombs.items():
    open('/tmp/outputs/' + name, 'wb').write(data)
print(len(bombs), 'bombs', max(map(len, bombs.values())), 'bytes at most')
"#;

/// The most memory the process has held (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server alive");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib / 1024
}

/// Every bomb is named in the `Left out:` line, none sent as an image or as bytes.
fn assert_bombs_left_out(result: &CallToolResult) {
    assert_eq!(result.is_error, Some(false), "{:?}", texts(result));
    assert!(texts(result)[0].contains("8 bombs"), "{:?}", texts(result));
    assert!(images(result).is_empty(), "no bomb sent as an image");
    assert!(resources(result).is_empty(), "no bomb sent as bytes");
    let line = left_out_line(result).expect("a left-out line");
    for name in [
        "report-1.jpg (16384x16384 pixels, over the 40 million",
        "report-2.jpg (16384x16384 pixels",
        "progressive.jpg (6000x6000 pixels would take",
        "baseline-cut.jpg (not decoded whole",
        "zeros.png (16384x16384 pixels",
        "zeros-cut.png (not decoded whole",
        "screen.gif (8192x8192 pixels",
        "lossless.webp (8192x8192 pixels",
    ] {
        assert!(line.contains(name), "{name} in: {line}");
    }
}

#[tokio::test]
async fn image_bombs_are_left_out_named_and_the_servers_memory_stays_bounded() {
    let command = tokio::process::Command::new(BINARY).configure(|cmd| {
        cmd.env("PYEXEC_POOL_SIZE", "0")
            .env("PYEXEC_CONCURRENCY", "4")
            .stderr(std::process::Stdio::null());
    });
    let transport = TokioChildProcess::new(command).expect("server starts");
    let pid = transport.id().expect("the server's pid");
    let client = ().serve(transport).await.expect("MCP handshake");
    let before = peak_rss_mib(pid);

    let result = call(&client, IMAGE_BOMBS).await;
    assert_bombs_left_out(&result);
    let one = peak_rss_mib(pid);
    // The report measured 787 MiB for the two JPEGs' six siblings alone.
    assert!(one < 300, "one call's bombs: peak {before} -> {one} MiB");

    let calls = futures::future::join_all((0..4).map(|_| call(&client, IMAGE_BOMBS))).await;
    for result in &calls {
        assert_bombs_left_out(result);
    }
    let four = peak_rss_mib(pid);
    assert!(four < 500, "four calls at once: peak {one} -> {four} MiB");
    eprintln!("server peak RSS: {before} MiB at start, {one} after one call, {four} after four");
    client.cancel().await.unwrap();
}
