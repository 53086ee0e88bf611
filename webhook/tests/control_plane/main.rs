//! Tests against the real control plane of `KUBEBUILDER_ASSETS` (kube-apiserver, kube-controller-manager, etcd):
//! the installation from `manifests/`, the caches and watches, `doctor --cluster`. Skipped (ignored, with the reason)
//! without one, except under `CI=true`. One test binary, so one link.

#[path = "../common/mod.rs"]
mod common;

mod doctor_cluster;
mod emulator;
mod envtest;
mod helm;
mod install;
mod rbac_audit;
mod sync_controller;
