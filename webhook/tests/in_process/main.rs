//! Tests that run the webhook in this process: the engine over the captured fixtures (insta snapshots), properties,
//! the router, the TLS server and upstream's own webhook tests. One test binary, so one link.

#[path = "../common/mod.rs"]
mod common;

mod fixtures;
mod properties;
mod router;
mod server;
mod upstream_compat;
