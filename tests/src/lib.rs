//! `wi-testbed`: the Entra ID and Key Vault emulator, the end-to-end demo and the cross-crate tests.
//!
//! - [`emulator::Emulator`], started in-process (or as the `wi-emulator` binary with an HTTP admin API): an OIDC
//!   issuer minting service account tokens, Entra ID's token endpoint for federated client assertions, and Key
//!   Vault vaults (secrets, keys, certificates: latest or by version, listings, the bearer challenge, per-identity
//!   access, disabled objects, certificate-backed secrets), with faults and request counters;
//! - [`jwt`]: RS256 keys, JWKS, verification;
//! - [`demo`]: the walkthrough end to end, which the `wi-demo` binary prints.
pub mod demo;
pub mod emulator;
pub mod jwt;

pub use emulator::Emulator;
