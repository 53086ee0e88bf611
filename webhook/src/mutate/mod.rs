//! The mutation engine: a pure function from a pod (as the API server sent it) and what it refers to, to an
//! RFC 6902 patch plus warnings, or a denial.
//!
//! The pod is handled as `serde_json::Value` so that fields this crate does not know (a newer API version, another
//! webhook's additions) are never touched, and the patch only ever adds or replaces: no `remove` op is emitted.
//! What the engine injected is recorded in the `workload-identity.rs/injected` annotation, so a second pass
//! (reinvocation) adds nothing, and a pass with a changed ServiceAccount replaces what this webhook injected
//! before while leaving what the user wrote alone.

mod annotations;
mod denial;
mod identity;
mod inputs;
mod marker;
mod opt_in;
mod pass;
mod patch;
mod pod;
mod sidecar;
#[cfg(test)]
mod tests;
mod values;
pub(crate) mod warnings;

pub(crate) use annotations::token_expiration;
pub use denial::Denial;
pub use inputs::{ClassLookup, Inputs, Mutation, ObjectError, ServiceAccount, namespace_labels};
pub use opt_in::{OptIn, opt_in};
pub use patch::Patch;
pub use pod::{pod_of, secret_provider_class_name, service_account_name};
pub(crate) use values::{at, is_contract_key, non_empty, string_map};

use serde_json::Value;
use wi_contract::*;

use crate::config::Config;
use annotations::{Delivery, check_proxy_annotations, name_list, secrets_plan};
use identity::{Identity, inject_containers, inject_volume, token_volume};
use marker::{read_marker, record};
use pass::Pass;
use pod::{PodParts, containers_of};
use sidecar::{inject_sidecar, sidecar_container};
use warnings::{warn_identity, warn_lookalikes, warn_secret_provider_class, warn_unknown_names};

/// Computes the patch for a pod: [`opt_in`] from `inputs.namespace_labels`, then [`mutate_with`]. See the module docs.
pub fn mutate(pod: &Value, inputs: &Inputs<'_>, config: &Config) -> Result<Mutation, Denial> {
    mutate_with(pod, opt_in(pod, inputs.namespace_labels), inputs, config)
}

/// Computes the patch for a pod whose opt-in was decided already (by the admission path, before any lookup).
pub fn mutate_with(pod: &Value, opt_in: OptIn, inputs: &Inputs<'_>, config: &Config) -> Result<Mutation, Denial> {
    let parts = PodParts::read(pod)?;
    let mut warnings = opt_in.warnings;
    if !opt_in.opted_in {
        return Ok(Mutation {
            patch: Patch::default(),
            warnings,
        });
    }
    let spec = parts.spec()?;
    let containers = containers_of(spec)?;
    let sa = inputs.service_account;
    let annotations = &parts.annotations;

    // What the pod asks for: a bad value is a denial, naming the annotation; warnings in the order the keys are read.
    let expiration = token_expiration(annotations, sa)?;
    let skip = name_list(annotations.get(SKIP_CONTAINERS_ANNOTATION));
    warn_unknown_names(SKIP_CONTAINERS_ANNOTATION, &skip, &containers, &mut warnings);
    check_proxy_annotations(annotations, &mut warnings)?;
    let plan = secrets_plan(annotations, &containers, &mut warnings)?;
    let identity = Identity::of(sa, config);

    // What would break at run time without refusing the pod.
    warn_lookalikes(annotations, &parts.labels, sa, &mut warnings);
    warn_identity(sa, identity.client_id, identity.tenant_id, &mut warnings);
    if let Some(plan) = &plan {
        warn_secret_provider_class(
            &plan.class,
            inputs.secret_provider_class,
            sa,
            (identity.client_id, identity.tenant_id),
            plan.delivery == Delivery::Sidecar,
            &mut warnings,
        );
    }

    // What an earlier pass injected, which this one may bring up to date; everything else is the user's.
    let (old, marker_warning) = read_marker(annotations.get(INJECTED_ANNOTATION));
    warnings.extend(marker_warning);
    let env = identity.env(spec, &old, config)?;
    let mut pass = Pass::new(&old, warnings, containers.len());

    // The sidecar's container, when `sidecar` delivery asks for one; checked before anything else is patched.
    let sidecar = match &plan {
        Some(plan) if plan.delivery == Delivery::Sidecar => Some(sidecar_container(
            plan,
            inputs.secret_provider_class,
            &sa.namespace,
            &containers,
            &env.pairs(),
            &old,
            config,
        )?),
        _ => None,
    };
    inject_containers(
        spec,
        &containers,
        &skip,
        &env,
        plan.as_ref(),
        &config.audience,
        &mut pass,
    )?;
    let any_token_mount = sidecar.is_some()
        || pass.marker.mounts.values().any(|v| v.contains(TOKEN_VOLUME))
        || containers.iter().any(|c| c.mount_index(TOKEN_VOLUME).is_some());
    if any_token_mount {
        inject_volume(spec, TOKEN_VOLUME, &token_volume(config, expiration)?, &mut pass)?;
    }
    if let Some(plan) = &plan {
        let volume = serde_json::to_vec(&plan.volume()).map_err(patch::encoding)?;
        inject_volume(spec, SECRETS_VOLUME, &volume, &mut pass)?;
    }
    let Pass {
        mut marker,
        ops,
        warnings,
        ..
    } = pass;
    let mut ops = ops.finish()?;
    if let Some(container) = sidecar {
        // Last of the container operations: inserting at the head of initContainers shifts the indices the
        // operations above were computed with.
        inject_sidecar(spec, container, &old, &mut marker, &mut ops)?;
    }
    record(parts.object, &old, &marker, &mut ops)?;
    Ok(Mutation {
        patch: ops.into_patch(),
        warnings,
    })
}
