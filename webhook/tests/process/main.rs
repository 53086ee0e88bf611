//! Tests that run the `wi-webhook` binary as a process, as users start it: `mutate`, `doctor`, `serve`. One test
//! binary, so one link.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod doctor;
mod serve_process;
