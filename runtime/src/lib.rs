//! Process plumbing shared by the binaries (`wi-webhook serve`, `wi-sidecar run`, the testbed's emulator), written
//! once: [`shutdown::signal`] (SIGTERM or SIGINT), [`log::init`] (one `tracing` subscriber on standard error) and
//! [`admin::AdminServer`] (`/healthz`, `/readyz` with the reason it is not ready, `/metrics`). [`procfs`] reads what
//! the benchmarks measure of a process.
//!
//! kubert's `shutdown`, `log` and `admin` do the same jobs; they are not used because kubert 0.25 builds its admin
//! server on prometheus-client 0.23 (this workspace is on 0.26: the registries are different types) and answers
//! `/readyz` from one boolean, where both our admin ports say why they are not ready (the certificate, the caches,
//! the first sync).

pub mod admin;
pub mod log;
pub mod procfs;
pub mod shutdown;
