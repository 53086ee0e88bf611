//! `wi-sidecar` as shipped: the binary as a process against the emulator, and the Azure provider's own cases (the bytes
//! it writes for each object kind and encoding). One test binary, so one link.

mod binary;
mod faults;
mod provider_compat;
