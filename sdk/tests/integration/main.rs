//! `wi-sdk` as an app uses it: rotations of real directories (inotify and the poll), the TLS resolver, the
//! examples as processes. One test binary, so one link.

#[path = "../common/mod.rs"]
mod common;

mod examples;
mod rotation;
mod tls;
