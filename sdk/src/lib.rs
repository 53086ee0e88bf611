//! `wi-sdk`: what apps link to watch the mounted secret files and hot-reload them on rotation.
//!
//! Nothing is implemented here yet: this crate reserves its place in the workspace (see `DESIGN.md`).
#![warn(missing_docs)]
