//! Why a pod is refused. Every message names the annotation, container or path at fault.

use wi_contract::*;

use crate::diagnostics::Code;

/// Why a pod is refused. Every message names the annotation, container or path at fault.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Denial {
    /// An invariant of the webhook broke (a bug): refused with 500 rather than answered with an empty value.
    #[error("internal error, please report it: {0}")]
    Internal(String),
    /// The object is not a pod the engine can read (only possible with hand-made input: the API server decodes
    /// pods before admission).
    #[error("malformed pod: {0}")]
    MalformedPod(String),
    /// The token lifetime annotation is not a number of seconds in range.
    #[error(
        "annotation {TOKEN_EXPIRATION_ANNOTATION} on {on} is {value:?}: expected a whole number of seconds \
         from {MIN_TOKEN_EXPIRATION} to {MAX_TOKEN_EXPIRATION}"
    )]
    InvalidTokenExpiration {
        /// Where the annotation was read: `pod` or `ServiceAccount NS/NAME`.
        on: String,
        /// The value found.
        value: String,
    },
    /// Some other annotation has a value the engine cannot use.
    #[error("annotation {key} on the pod is {value:?}: {expected}")]
    InvalidAnnotation {
        /// The annotation key.
        key: &'static str,
        /// The value found.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// A container already mounts another volume where the webhook needs to mount one.
    #[error(
        "container {container:?} already mounts volume {existing:?} at {path}, where the webhook mounts \
         {volume:?}: remove that mount{hint}"
    )]
    MountPathConflict {
        /// The container.
        container: String,
        /// The mount path.
        path: String,
        /// The user's volume mounted there.
        existing: String,
        /// The webhook's volume.
        volume: &'static str,
        /// What else can be done.
        hint: &'static str,
    },
    /// The pod has its own volume under a name the webhook reserves, with other contents.
    #[error("the pod already has a volume named {0:?} that the webhook did not inject; rename it")]
    VolumeNameConflict(&'static str),
    /// `secrets-delivery: sidecar` needs the SecretProviderClass at admission: `wi-sidecar` is configured from it.
    #[error(
        "{SECRETS_DELIVERY_ANNOTATION}: \"sidecar\" configures wi-sidecar from SecretProviderClass {class:?} in \
         namespace {namespace:?}, which {why}"
    )]
    SecretProviderClassUnavailable {
        /// The class named by the pod.
        class: String,
        /// The pod's namespace.
        namespace: String,
        /// What went wrong, with what to do.
        why: String,
    },
    /// The SecretProviderClass cannot configure `wi-sidecar`; the message names the field.
    #[error("SecretProviderClass {class:?} cannot configure wi-sidecar: {error}")]
    InvalidSecretProviderClass {
        /// The class named by the pod.
        class: String,
        /// What is wrong with it, naming the parameter.
        error: String,
    },
    /// The pod has its own container under the name of the injected sidecar.
    #[error("the pod already has a container named {0:?} that the webhook did not inject; rename it")]
    ContainerNameConflict(&'static str),
    /// A container of the pod declares the port the injected sidecar listens on (the pod's network is shared).
    #[error(
        "container {container:?} declares port {port}, where the injected {SIDECAR_CONTAINER} serves /readyz and \
         /metrics (containers of a pod share one network); use another port or \"csi\" delivery"
    )]
    PortConflict {
        /// The container.
        container: String,
        /// The port.
        port: u16,
    },
}

impl Denial {
    /// The diagnostic code of this refusal (`wi-webhook doctor` reports it, and the troubleshooting table lists it).
    pub fn code(&self) -> Code {
        match self {
            Denial::Internal(_) => Code::Internal,
            Denial::MalformedPod(_) => Code::MalformedPod,
            Denial::InvalidTokenExpiration { .. } => Code::TokenExpiration,
            Denial::InvalidAnnotation { .. } => Code::InvalidAnnotation,
            Denial::MountPathConflict { .. }
            | Denial::VolumeNameConflict(_)
            | Denial::ContainerNameConflict(_)
            | Denial::PortConflict { .. } => Code::Conflict,
            Denial::SecretProviderClassUnavailable { .. } => Code::ClassNotFound,
            Denial::InvalidSecretProviderClass { .. } => Code::SidecarRefusesClass,
        }
    }
}
