//! Every label this project puts on containers and images, and the base image layout
//! version: the names other servers, the reaper, installs and `doctor` all read, in one place
//! so that no module spells one as a literal.

/// Label on every container this project creates; its value is the owning server instance.
pub const LABEL_OWNER: &str = "mcp-python-executor";
/// Label holding the Unix time after which any server may remove the container.
pub const LABEL_DEADLINE: &str = "mcp-python-executor.deadline";
/// Label on warm-pool containers: started before their call, waiting for a payload. The
/// reaper removes one that exited without ever getting a payload (its server is gone)
/// before its deadline.
pub const LABEL_WARM: &str = "mcp-python-executor.warm";
/// Label on session containers (its value is the session's creation time): a long-lived
/// runner taking one call at a time. Like a warm container, one that exited with the "no
/// payload" status lost its server (or idled out) and is reaped before its deadline.
pub const LABEL_SESSION: &str = "mcp-python-executor.session";
/// Label on install containers: the environment tag they install into.
pub const LABEL_INSTALL: &str = "mcp-python-executor.install";
/// Label: JSON object of every installed distribution, `{name: version}`.
pub const LABEL_PACKAGES: &str = "mcp-python-executor.packages";
/// Label: JSON array of the specs users asked for, in order (used to rebuild in one layer).
pub const LABEL_REQUESTED: &str = "mcp-python-executor.requested";
/// Label: id of the image this layer was installed on.
pub const LABEL_PARENT: &str = "mcp-python-executor.parent";
/// Label: id of the base image at the bottom of the chain.
pub const LABEL_BASE: &str = "mcp-python-executor.base";
/// Label: number of install layers above the base.
pub const LABEL_DEPTH: &str = "mcp-python-executor.depth";
/// Label: Unix time the layer was made.
pub const LABEL_CREATED: &str = "mcp-python-executor.created";
/// Label: the environment tag the layer was made for; superseded layers are found by it.
pub const LABEL_ENV: &str = "mcp-python-executor.env";
/// Label the base image carries when its layout has the installer user (images/Dockerfile).
pub const LABEL_LAYOUT: &str = "mcp-python-executor.layout";
/// The layout installs need: `/opt/venv` owned by the installer, pip in `/opt/pyexec`.
pub const BASE_LAYOUT: &str = "2";
/// Label: the first 16 hex digits of the recipe's SHA-256 (as `sha256sum | cut -c1-16`).
pub const LABEL_RECIPE: &str = "mcp-python-executor.recipe";
