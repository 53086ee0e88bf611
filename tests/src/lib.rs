//! `wi-testbed`: the Entra ID and Key Vault emulator, the end-to-end demo and the cross-crate tests.
//!
//! Work in progress. What exists: [`jwt`] (RS256 keys, JWKS, verification) and [`emulator::Emulator`], started
//! in-process: an OIDC issuer minting service account tokens, Entra ID's token endpoint for federated client
//! assertions, and Key Vault vaults (get latest or by version, list secrets and versions, the bearer challenge,
//! per-identity access, disabled secrets, certificate-backed secrets), with faults and request counters. Not yet:
//! the `wi-emulator` binary, the HTTP admin API, the proof with Microsoft's Python SDK.
mod admin;
pub mod emulator;
pub mod jwt;

pub use emulator::Emulator;
