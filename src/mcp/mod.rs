//! The MCP face of the server, thin on purpose: the tool methods take their arguments and
//! request context, hand each call to the [`crate::executor`], and render what comes back as
//! MCP content. No Docker types appear here.
//!
//! - `tools`: the `#[tool]` methods and the `ServerHandler` ([`PythonExecutor`]).
//! - `args`: argument structs and structured answers, as `tools/list` shows them.
//! - `describe`: the tool descriptions, with the limits in force.
//! - `render`: executions, install reports, package lists and sessions as answers.
//! - `attachments`, `images`: returned figures and files as content, images fitted for a
//!   model; links to what `--output-dir` saved.
//! - `context`: the caller and session of a request; where its notifications go.
//! - `notify`: one bounded, coalescing notifier for live output and pip's output.

mod args;
mod attachments;
mod context;
mod describe;
mod images;
mod notify;
mod render;
#[cfg(test)]
mod test_images;
mod tools;

pub use args::{
    CloseSessionArgs, ExecutePythonArgs, ExecutionStatus, InputData, InstallPackagesArgs,
    InstalledPackage, PackageList,
};
pub use describe::{create_session_description, execute_description};
pub use render::{render, render_install, render_package_list};
pub use tools::PythonExecutor;
