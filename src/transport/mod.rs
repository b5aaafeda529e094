//! How clients reach the server: the stdio line gateway a desktop client starts, and
//! Streamable HTTP for a team. Both count what a request may cost before rmcp parses it
//! (`intake`); HTTP's connections are bounded before authentication (`listener`). Above the
//! MCP layer: a transport hands rmcp bytes and knows nothing of the tools beyond the handler
//! it serves.

pub mod http;
pub mod intake;
pub mod listener;
pub mod stdio;
