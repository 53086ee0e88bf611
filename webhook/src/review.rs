//! AdmissionReview in and out, and [`Rejection`]: why a pod CREATE is refused, with the one status each cause gets.
//!
//! Both `admission.k8s.io/v1` and `v1beta1` are read (their bodies are the same apart from `apiVersion`), and the
//! response echoes the request's `apiVersion`, `kind` and `uid`. The pod stays a `serde_json::Value` from the wire to
//! the engine, so nothing the API server sent is lost in a typed round trip.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::lookup::LookupError;
use crate::metrics::Outcome;
use crate::mutate::{Denial, Mutation, Patch, secret_provider_class_name, service_account_name};

/// The AdmissionReview API versions the webhook accepts.
pub const API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// A body that is not an AdmissionReview request the webhook can answer.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON at all.
    #[error("the body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not an object.
    #[error("the body is not a JSON object")]
    NotAnObject,
    /// JSON, but not shaped like an AdmissionReview (a list, a number for `kind`).
    #[error("the body is JSON but not an AdmissionReview: {0}")]
    WrongShape(#[source] serde_json::Error),
    /// `kind` is not `AdmissionReview`.
    #[error("kind is {0:?}, expected \"AdmissionReview\"")]
    WrongKind(String),
    /// `apiVersion` is missing or not one the webhook speaks.
    #[error("apiVersion is {0:?}, expected admission.k8s.io/v1 or admission.k8s.io/v1beta1")]
    UnsupportedVersion(String),
    /// No `request`.
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// `request` lacks a field or has one of the wrong type.
    #[error("the AdmissionReview request is invalid: {0}")]
    InvalidRequest(#[source] serde_json::Error),
    /// A pod CREATE whose `request.object` is not a JSON object (upstream answers 400 too: it cannot decode a Pod).
    #[error("request.object of a pod CREATE is {0}, not a Pod")]
    ObjectNotAPod(&'static str),
}

/// Why a pod CREATE is refused, and with which status: the one place a status code is chosen.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The engine refused the pod.
    #[error(transparent)]
    Denied(#[from] Denial),
    /// The pod runs as a ServiceAccount that does not exist.
    #[error("ServiceAccount {namespace}/{name} not found")]
    ServiceAccountNotFound {
        /// The pod's namespace.
        namespace: String,
        /// The ServiceAccount it names.
        name: String,
    },
    /// What the pod refers to could not be read; the request may succeed when retried.
    #[error("{0}; retry the request")]
    LookupFailed(#[from] LookupError),
}

impl Rejection {
    /// The HTTP-like code and reason the API server reports: 500 for an internal error or a failed lookup (a
    /// retry may succeed), 404 for a missing ServiceAccount, 403 for everything the pod itself can fix.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Rejection::Denied(Denial::Internal(_)) | Rejection::LookupFailed(_) => (500, "InternalError"),
            Rejection::ServiceAccountNotFound { .. } => (404, "NotFound"),
            Rejection::Denied(_) => (403, "Forbidden"),
        }
    }

    /// How the request is counted in `wi_webhook_admission_requests_total`.
    pub fn outcome(&self) -> Outcome {
        match self {
            Rejection::LookupFailed(_) => Outcome::Error,
            _ => Outcome::Denied,
        }
    }
}

/// Group, version and kind of the object under review.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GroupVersionKind {
    /// API group, empty for the core group.
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

/// The fields of an AdmissionRequest the webhook reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Identifies the request; echoed in the response.
    pub uid: String,
    /// Kind of the object.
    pub kind: GroupVersionKind,
    /// Subresource, if any (pods/ephemeralcontainers, pods/binding, ...).
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: String,
    /// Object name; absent for pods made by controllers, which only have `generateName`.
    #[serde(default)]
    pub name: Option<String>,
    /// Namespace of the object.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object as it will be stored, before this webhook's patch.
    #[serde(default)]
    pub object: Option<Value>,
    /// Whether the request is a dry run. The engine has no side effects, so it behaves the same.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// A parsed AdmissionReview request.
#[derive(Debug, Clone)]
pub struct AdmissionReview {
    /// The request's `apiVersion`, echoed in the response.
    pub api_version: String,
    /// The request.
    pub request: AdmissionRequest,
}

/// A pod being created: what the caller must look up before calling the engine.
#[derive(Debug, Clone, Copy)]
pub struct PodCreate<'a> {
    /// The pod as the API server sent it.
    pub pod: &'a Value,
    /// The pod's namespace.
    pub namespace: &'a str,
    /// Name of the pod, or its `generateName` prefix for controller-made pods (for logs).
    pub name: &'a str,
    /// The ServiceAccount it runs as.
    pub service_account: &'a str,
    /// The SecretProviderClass it names, if any.
    pub secret_provider_class: Option<&'a str>,
}

/// Whether the request creates a pod (not a subresource): the only request the webhook mutates.
fn is_pod_create(r: &AdmissionRequest) -> bool {
    r.kind.group.is_empty()
        && r.kind.version == "v1"
        && r.kind.kind == "Pod"
        && r.operation == "CREATE"
        && r.sub_resource.as_deref().is_none_or(str::is_empty)
}

/// A pod CREATE must carry the pod as an object: one that does not is refused (400), never allowed unchanged.
fn check_object(request: &AdmissionRequest) -> Result<(), ReviewError> {
    if !is_pod_create(request) {
        return Ok(());
    }
    match &request.object {
        Some(Value::Object(_)) => Ok(()),
        None | Some(Value::Null) => Err(ReviewError::ObjectNotAPod("missing")),
        Some(Value::String(_)) => Err(ReviewError::ObjectNotAPod("a string")),
        Some(Value::Array(_)) => Err(ReviewError::ObjectNotAPod("a list")),
        Some(Value::Number(_)) => Err(ReviewError::ObjectNotAPod("a number")),
        Some(Value::Bool(_)) => Err(ReviewError::ObjectNotAPod("a boolean")),
    }
}

impl AdmissionReview {
    /// Parses a request body. The request is read straight from the bytes (the envelope first, as raw JSON), so
    /// the pod is parsed once.
    pub fn parse(body: &[u8]) -> Result<Self, ReviewError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Envelope<'a> {
            #[serde(default)]
            kind: Option<String>,
            #[serde(default)]
            api_version: Option<String>,
            #[serde(default, borrow)]
            request: Option<&'a serde_json::value::RawValue>,
        }
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ReviewError::NotAnObject,
                Err(e) => ReviewError::NotJson(e),
            });
        }
        let envelope: Envelope<'_> = match serde_json::from_slice(body) {
            Ok(envelope) => envelope,
            // Valid JSON of another shape (a list, a string) is told apart from invalid JSON.
            Err(e) if e.is_data() => return Err(ReviewError::WrongShape(e)),
            Err(e) => return Err(ReviewError::NotJson(e)),
        };
        let api_version = check_envelope(envelope.kind.as_deref(), envelope.api_version.as_deref())?;
        let raw = envelope
            .request
            .filter(|r| r.get() != "null")
            .ok_or(ReviewError::NoRequest)?;
        let request = serde_json::from_str(raw.get()).map_err(ReviewError::InvalidRequest)?;
        check_object(&request)?;
        Ok(AdmissionReview { api_version, request })
    }

    /// Reads an AdmissionReview already parsed as JSON.
    pub fn from_value(value: Value) -> Result<Self, ReviewError> {
        let Value::Object(mut map) = value else {
            return Err(ReviewError::NotAnObject);
        };
        let api_version = check_envelope(
            map.get("kind").and_then(Value::as_str),
            map.get("apiVersion").and_then(Value::as_str),
        )?;
        let request = match map.remove("request") {
            None | Some(Value::Null) => return Err(ReviewError::NoRequest),
            Some(request) => serde_json::from_value(request).map_err(ReviewError::InvalidRequest)?,
        };
        check_object(&request)?;
        Ok(AdmissionReview { api_version, request })
    }

    /// The pod, when this is a pod CREATE (the only request the webhook mutates). Anything else is allowed
    /// unchanged.
    pub fn pod_create(&self) -> Option<PodCreate<'_>> {
        if !is_pod_create(&self.request) {
            return None;
        }
        let r = &self.request;
        let pod = r.object.as_ref().filter(|o| o.is_object())?;
        let meta = |key: &str| crate::mutate::at(pod, &["metadata", key]).and_then(Value::as_str);
        let namespace = r
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(meta("namespace"))
            .unwrap_or("default");
        let name = r
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(meta("name"))
            .or(meta("generateName"))
            .unwrap_or_default();
        Some(PodCreate {
            pod,
            namespace,
            name,
            service_account: service_account_name(pod),
            secret_provider_class: secret_provider_class_name(pod),
        })
    }

    /// The response for this request: allowed with the mutation's patch and warnings, or refused with the status
    /// [`Rejection::status`] chooses.
    pub fn respond(&self, outcome: Result<Mutation, Rejection>) -> ReviewResponse {
        let uid = &self.request.uid;
        let refused = |rejection: &Rejection| {
            let (code, reason) = rejection.status();
            AdmissionResponse::denied(uid, rejection.to_string(), code, reason)
        };
        let response = match outcome {
            Ok(mutation) => AdmissionResponse::allowed(uid, mutation),
            Err(rejection) => refused(&rejection),
        };
        response.into_review(&self.api_version)
    }

    /// The response that allows the request unchanged.
    pub fn allow_unchanged(&self) -> ReviewResponse {
        self.respond(Ok(Mutation::default()))
    }
}

fn check_envelope(kind: Option<&str>, api_version: Option<&str>) -> Result<String, ReviewError> {
    let kind = kind.unwrap_or_default();
    if kind != "AdmissionReview" {
        return Err(ReviewError::WrongKind(kind.to_owned()));
    }
    let api_version = api_version.unwrap_or_default();
    if !API_VERSIONS.contains(&api_version) {
        return Err(ReviewError::UnsupportedVersion(api_version.to_owned()));
    }
    Ok(api_version.to_owned())
}

/// The response half of an AdmissionReview, encoded by [`ReviewResponse::to_json`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionResponse {
    /// The request's uid.
    pub uid: String,
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Why a request is denied.
    pub status: Option<Status>,
    /// The JSON patch (base64-encoded in the response).
    pub patch: Option<Patch>,
    /// Always `JSONPatch` when a patch is present.
    pub patch_type: Option<&'static str>,
    /// Warnings shown to the requester (`kubectl` prints them).
    pub warnings: Vec<String>,
}

/// The status of a denied request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    /// HTTP-like code the API server reports.
    pub code: u16,
    /// Machine-readable reason.
    pub reason: &'static str,
    /// What the requester sees.
    pub message: String,
}

impl AdmissionResponse {
    /// Allowed, with the mutation's patch (omitted when empty) and warnings.
    pub fn allowed(uid: &str, mutation: Mutation) -> Self {
        let patch = (!mutation.patch.is_empty()).then_some(mutation.patch);
        AdmissionResponse {
            uid: uid.to_owned(),
            allowed: true,
            status: None,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings: mutation.warnings.into_iter().map(|w| w.message).collect(),
        }
    }

    /// Denied with a message for the requester.
    pub fn denied(uid: &str, message: String, code: u16, reason: &'static str) -> Self {
        AdmissionResponse {
            uid: uid.to_owned(),
            allowed: false,
            status: Some(Status { code, reason, message }),
            patch: None,
            patch_type: None,
            warnings: Vec::new(),
        }
    }

    /// Wraps the response in an AdmissionReview of the given apiVersion.
    pub fn into_review(self, api_version: &str) -> ReviewResponse {
        ReviewResponse {
            api_version: api_version.to_owned(),
            kind: "AdmissionReview",
            response: self,
        }
    }
}

/// An AdmissionReview carrying a response. [`to_json`](Self::to_json) is what the API server is sent; it is also
/// what `Serialize` writes (for `serde_json`: `to_value` to read it, `to_string_pretty` of that to print it).
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewResponse {
    /// The request's `apiVersion`.
    pub api_version: String,
    /// `AdmissionReview`.
    pub kind: &'static str,
    /// The response.
    pub response: AdmissionResponse,
}

impl ReviewResponse {
    /// The response as JSON, written in one pass into a buffer of its size: the patch is base64-encoded straight
    /// into it (base64 needs no escaping), the strings are escaped by `serde_json`.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let r = &self.response;
        let patch = r.patch.as_ref().map(Patch::to_json);
        let encoded_len = patch.map_or(0, |p| p.len().div_ceil(3) * 4);
        let texts = r.uid.len() + r.warnings.iter().map(|w| w.len() + 3).sum::<usize>();
        let status = r.status.as_ref().map_or(0, |s| s.message.len() + 64);
        let mut out = Vec::with_capacity(128 + self.api_version.len() + texts + status + encoded_len);
        out.extend_from_slice(b"{\"apiVersion\":");
        serde_json::to_writer(&mut out, &self.api_version)?;
        out.extend_from_slice(b",\"kind\":");
        serde_json::to_writer(&mut out, self.kind)?;
        out.extend_from_slice(b",\"response\":{\"uid\":");
        serde_json::to_writer(&mut out, &r.uid)?;
        out.extend_from_slice(if r.allowed {
            b",\"allowed\":true"
        } else {
            b",\"allowed\":false"
        });
        if let Some(status) = &r.status {
            out.extend_from_slice(b",\"status\":");
            serde_json::to_writer(&mut out, status)?;
        }
        if let Some(patch) = patch {
            out.extend_from_slice(b",\"patch\":\"");
            // SIMD base64 where the CPU has it (a tenth of the instructions of `base64`'s portable engine, the
            // largest single cost of a mutation's response); the output is the same standard, padded alphabet.
            base64_simd::STANDARD.encode_append(patch, &mut out);
            out.push(b'"');
        }
        if let Some(patch_type) = r.patch_type {
            out.extend_from_slice(b",\"patchType\":");
            serde_json::to_writer(&mut out, patch_type)?;
        }
        if !r.warnings.is_empty() {
            out.extend_from_slice(b",\"warnings\":");
            serde_json::to_writer(&mut out, &r.warnings)?;
        }
        out.extend_from_slice(b"}}");
        Ok(out)
    }
}

impl Serialize for ReviewResponse {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let json = self.to_json().map_err(S::Error::custom)?;
        let text = String::from_utf8(json).map_err(S::Error::custom)?;
        RawValue::from_string(text)
            .map_err(S::Error::custom)?
            .serialize(serializer)
    }
}

/// Decodes the patch of a response produced by [`AdmissionReview::respond`], for tests and the CLI.
pub fn decode_patch(review_response: &Value) -> Result<Option<json_patch::Patch>, String> {
    let Some(encoded) = review_response.pointer("/response/patch").and_then(Value::as_str) else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("patch is not base64: {e}"))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("patch is not a JSON patch: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn review(api_version: &str, request: Value) -> Value {
        json!({"apiVersion": api_version, "kind": "AdmissionReview", "request": request})
    }

    #[rstest]
    #[case(b"not json".as_slice(), "the body is not JSON")]
    #[case(b" [1]".as_slice(), "not a JSON object")]
    #[case(b"".as_slice(), "the body is not JSON: EOF")]
    #[case(br#"{"kind":3}"#.as_slice(), "not an AdmissionReview: invalid type: integer `3`")]
    #[case(br#"{"kind":"Pod","apiVersion":"v1"}"#.as_slice(), "kind is \"Pod\"")]
    #[case(br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v2"}"#.as_slice(), "apiVersion is \"admission.k8s.io/v2\"")]
    #[case(br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#.as_slice(), "has no request")]
    #[case(br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"kind":{}}}"#.as_slice(), "missing field `uid`")]
    fn invalid_bodies_say_what_is_wrong(#[case] body: &[u8], #[case] expected: &str) {
        let err = AdmissionReview::parse(body).unwrap_err().to_string();
        assert!(err.contains(expected), "{err:?} does not contain {expected:?}");
    }

    #[rstest]
    #[case("UPDATE", json!({"group": "", "version": "v1", "kind": "Pod"}), None)]
    #[case("CREATE", json!({"group": "", "version": "v1", "kind": "Pod"}), Some("ephemeralcontainers"))]
    #[case("CREATE", json!({"group": "apps", "version": "v1", "kind": "Deployment"}), None)]
    #[case("CREATE", json!({"group": "", "version": "v1", "kind": "Secret"}), None)]
    fn only_pod_creates_are_for_the_engine(
        #[case] operation: &str,
        #[case] kind: Value,
        #[case] sub_resource: Option<&str>,
    ) {
        let body = review(
            "admission.k8s.io/v1",
            json!({"uid": "u1", "kind": kind, "operation": operation, "subResource": sub_resource,
                   "object": {"metadata": {"name": "x"}, "spec": {"containers": []}}}),
        );
        let parsed = AdmissionReview::from_value(body).unwrap();
        assert!(parsed.pod_create().is_none());
        let out = serde_json::to_value(parsed.allow_unchanged()).unwrap();
        assert_eq!(out["response"], json!({"uid": "u1", "allowed": true}));
    }

    #[rstest]
    #[case("admission.k8s.io/v1")]
    #[case("admission.k8s.io/v1beta1")]
    fn responses_echo_api_version_kind_and_uid(#[case] api_version: &str) {
        let parsed = AdmissionReview::from_value(review(
            api_version,
            json!({"uid": "abc-123", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                   "object": {}}),
        ))
        .unwrap();
        let denied =
            serde_json::to_value(parsed.respond(Err(Denial::ContainerNameConflict("wi-sidecar").into()))).unwrap();
        assert_eq!(denied["apiVersion"], api_version);
        assert_eq!(denied["kind"], "AdmissionReview");
        assert_eq!(denied["response"]["uid"], "abc-123");
        assert_eq!(denied["response"]["allowed"], false);
        assert_eq!(denied["response"]["status"]["code"], 403);
        assert!(
            denied["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("sidecar")
        );
    }

    /// The response is written by hand: every field, in the order and with the escaping `serde_json` gives.
    #[test]
    fn the_response_is_the_json_the_api_server_reads() {
        let parsed = AdmissionReview::from_value(review(
            "admission.k8s.io/v1beta1",
            json!({"uid": "u\"1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                   "object": {}}),
        ))
        .unwrap();
        // A real patch: the engine's, on a pod with one container.
        let pod = json!({"metadata": {"name": "p", "labels": {"azure.workload.identity/use": "true"}},
                         "spec": {"containers": [{"name": "a"}]}});
        let sa = crate::mutate::ServiceAccount::from_object(&json!({"metadata": {"name": "s", "namespace": "n",
            "annotations": {"azure.workload.identity/client-id": "6f1c6b3e-0000-4000-8000-000000000001"}}}))
        .unwrap();
        let inputs = crate::mutate::Inputs {
            namespace_labels: None,
            service_account: &sa,
            secret_provider_class: Default::default(),
        };
        let config = crate::config::Config {
            tenant_id: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
            ..Default::default()
        };
        let mut mutation = crate::mutate::mutate(&pod, &inputs, &config).unwrap();
        assert!(mutation.warnings.is_empty());
        mutation.warnings.push(crate::diagnostics::Warning::new(
            crate::diagnostics::Code::InjectedRecord,
            crate::diagnostics::Subject::Pod,
            "a \"quoted\" warning\n".to_owned(),
        ));
        let patch_json = String::from_utf8(mutation.patch.to_json().to_vec()).unwrap();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&patch_json);
        let head = r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","response":{"uid":"u\"1","#;
        let text = |response: ReviewResponse| String::from_utf8(response.to_json().unwrap()).unwrap();

        let allowed = text(parsed.respond(Ok(mutation)));
        let tail = format!(
            r#""allowed":true,"patch":"{encoded}","patchType":"JSONPatch","warnings":["a \"quoted\" warning\n"]}}}}"#
        );
        assert_eq!(allowed, format!("{head}{tail}"));
        let denied = text(parsed.respond(Err(Denial::MalformedPod("spec is \"odd\"".to_owned()).into())));
        let tail = r#""allowed":false,"status":{"code":403,"reason":"Forbidden","message":"malformed pod: spec is \"odd\""}}}"#;
        assert_eq!(denied, format!("{head}{tail}"));
        assert_eq!(text(parsed.allow_unchanged()), format!(r#"{head}"allowed":true}}}}"#));

        // Serialize writes the same JSON; the patch decodes back to the engine's.
        let value = serde_json::to_value(parsed.allow_unchanged()).unwrap();
        assert_eq!(value["response"], json!({"uid": "u\"1", "allowed": true}));
        let decoded = decode_patch(&serde_json::from_str(&allowed).unwrap()).unwrap().unwrap();
        assert_eq!(serde_json::to_string(&decoded).unwrap(), patch_json);
    }

    #[test]
    fn an_internal_error_is_a_500_and_a_pod_problem_a_403() {
        let parsed = AdmissionReview::from_value(review(
            "admission.k8s.io/v1",
            json!({"uid": "u9", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                   "object": {}}),
        ))
        .unwrap();
        let internal = serde_json::to_value(
            parsed.respond(Err(Denial::Internal("the marker did not serialize".to_owned()).into())),
        )
        .unwrap();
        assert_eq!(internal["response"]["status"]["code"], 500);
        assert_eq!(internal["response"]["status"]["reason"], "InternalError");
        assert!(
            internal["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("please report it: the marker did not serialize")
        );
        let pod = serde_json::to_value(parsed.respond(Err(Denial::MalformedPod("spec is missing".to_owned()).into())))
            .unwrap();
        assert_eq!(pod["response"]["status"]["code"], 403);
    }

    /// A pod CREATE whose object is not an object is a bad request (400), as upstream answers, not an allowed pod.
    #[rstest]
    #[case(Some(json!("a pod")), Err("is a string, not a Pod"))]
    #[case(Some(json!(42)), Err("is a number, not a Pod"))]
    #[case(Some(Value::Null), Err("is missing, not a Pod"))]
    #[case(None, Err("is missing, not a Pod"))]
    #[case(Some(json!({"metadata": {"name": "x"}})), Ok(()))]
    fn a_pod_create_needs_a_pod_object(#[case] object: Option<Value>, #[case] expected: Result<(), &str>) {
        let mut request = json!({"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                                 "operation": "CREATE"});
        if let Some(object) = object {
            request["object"] = object;
        }
        let body = review("admission.k8s.io/v1", request);
        let bytes = serde_json::to_vec(&body).unwrap();
        for parsed in [AdmissionReview::from_value(body), AdmissionReview::parse(&bytes)] {
            match (parsed, expected) {
                (Ok(_), Ok(())) => {}
                (Err(error), Err(part)) => assert!(error.to_string().contains(part), "{error}"),
                (got, want) => panic!("{:?}, expected {want:?}", got.map(|_| ())),
            }
        }
        // Anything but a pod CREATE is not read, whatever its object.
        let delete = review(
            "admission.k8s.io/v1",
            json!({"uid": "u2", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "DELETE",
                   "object": "gone"}),
        );
        assert!(AdmissionReview::from_value(delete).is_ok());
    }

    #[test]
    fn controller_pods_are_named_by_generate_name() {
        let parsed = AdmissionReview::from_value(review(
            "admission.k8s.io/v1",
            json!({"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                   "namespace": "apps",
                   "object": {"metadata": {"generateName": "web-5f79fbc677-"}, "spec": {"serviceAccount": "legacy"}}}),
        ))
        .unwrap();
        let pod = parsed.pod_create().unwrap();
        assert_eq!(pod.name, "web-5f79fbc677-");
        assert_eq!(pod.namespace, "apps");
        assert_eq!(pod.service_account, "legacy");
        assert_eq!(pod.secret_provider_class, None);
    }
}
