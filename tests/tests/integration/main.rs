//! Across the crates: the emulator against the Azure SDK for Rust, the demo as a process, `wi-sdk`'s identity and
//! `wi-sidecar` syncing from the emulator. One test binary, so one link.

mod azure_sdk;
mod demo;
mod sdk_identity;
mod sidecar_sync;
