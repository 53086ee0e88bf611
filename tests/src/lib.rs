//! `wi-testbed`: the Entra ID and Key Vault emulator, the end-to-end demo and the cross-crate tests.
//!
//! Nothing is implemented here yet: this crate reserves its place in the workspace (see `DESIGN.md`).
