//! Sets `cfg(envtest)` when the tests that need a real control plane are to run: `KUBEBUILDER_ASSETS` names a folder
//! with `kube-apiserver` and `etcd` (as `setup-envtest` lays it out), or `CI=true`, where a missing control plane
//! must fail the run rather than skip. Without it those tests are `#[ignore]`d with the reason, so a skip is counted
//! as ignored, never as passed.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(envtest)");
    println!("cargo::rerun-if-env-changed=KUBEBUILDER_ASSETS");
    println!("cargo::rerun-if-env-changed=CI");
    let assets = std::env::var_os("KUBEBUILDER_ASSETS");
    let present = assets.is_some_and(|dir| {
        let dir = Path::new(&dir);
        dir.join("kube-apiserver").is_file() && dir.join("etcd").is_file()
    });
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if present || ci {
        println!("cargo::rustc-cfg=envtest");
    }
}
