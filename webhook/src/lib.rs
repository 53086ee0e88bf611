//! `wi-webhook`: a mutating admission webhook that gives Kubernetes pods an Azure workload identity and the Key
//! Vault objects of a SecretProviderClass.
//!
//! The heart is [`mutate::mutate`], a pure function from a pod and what it refers to (its ServiceAccount, its
//! namespace's labels, its SecretProviderClass) to a JSON patch plus warnings, or a denial. [`review`] wraps it
//! in AdmissionReview requests and responses; [`admission`] is the one path from a review to an answer (opt-in,
//! [`lookup`]s, engine), which [`server`] serves over HTTPS with caches of the cluster's objects and [`cli`]'s
//! `mutate` runs over files. Every mistake the engine warns about or refuses has a stable [`diagnostics::Code`];
//! [`doctor`] finds those and the ones only a view of several objects shows (workload, ServiceAccount,
//! SecretProviderClass, namespace, webhook configuration, the Azure side) in manifests, `az` output or a cluster.
//!
//! ```
//! use serde_json::json;
//! use wi_webhook::config::Config;
//! use wi_webhook::mutate::{mutate, Inputs, ServiceAccount};
//!
//! let pod = json!({
//!     "metadata": {"name": "app", "labels": {"azure.workload.identity/use": "true"}},
//!     "spec": {"containers": [{"name": "app", "image": "nginx"}]},
//! });
//! let sa = ServiceAccount::from_object(&json!({
//!     "kind": "ServiceAccount",
//!     "metadata": {"name": "default", "namespace": "apps",
//!                  "annotations": {"azure.workload.identity/client-id": "dc93f674-70ec-43e3-be7b-bf11ac753aa3"}},
//! }))?;
//! let config = Config { tenant_id: Some("15c361b7-5906-4328-b3f0-4ff62413e436".into()), ..Config::default() };
//! let inputs = Inputs { namespace_labels: None, service_account: &sa, secret_provider_class: Default::default() };
//! let mutation = mutate(&pod, &inputs, &config)?;
//!
//! let mut patched = pod.clone();
//! json_patch::patch(&mut patched, &mutation.patch.to_json_patch()?)?;
//! assert_eq!(patched["spec"]["containers"][0]["env"][0]["name"], "AZURE_CLIENT_ID");
//! assert!(mutation.warnings.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod admission;
pub mod cli;
pub mod config;
pub mod diagnostics;
pub mod doctor;
pub mod input;
pub mod lookup;
pub mod metrics;
pub mod mutate;
pub mod review;
pub mod server;
