//! The whole admission path on an untrusted AdmissionReview body: decode, opt-in, lookups (every ServiceAccount
//! annotated, every class the fixture's), the engine, the response. Beyond "never panics":
//! - the response is JSON the API server reads (an AdmissionReview with the request's uid);
//! - a patch never removes, applies to the pod, and leaves a pod that is still a valid `Pod` when the input was one;
//! - a second pass over the patched pod (reinvocation) adds nothing.

#![no_main]

use std::collections::BTreeMap;

use futures::FutureExt;
use futures::future::BoxFuture;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wi_webhook::config::Config;
use wi_webhook::lookup::{Lookup, LookupError};
use wi_webhook::mutate::ServiceAccount;
use wi_webhook::review::{AdmissionReview, decode_patch};

/// Every ServiceAccount exists, with the fixture's client and tenant ids, except those named `missing`; every
/// namespace but `default` is opted in; every class is the fixture's.
struct Everything {
    annotations: BTreeMap<String, String>,
    class: Value,
}

impl Lookup for Everything {
    fn service_account<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceAccount>, LookupError>> {
        let sa = (name != "missing").then(|| ServiceAccount {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            annotations: self.annotations.clone(),
            labels: BTreeMap::new(),
        });
        futures::future::ready(Ok(sa)).boxed()
    }

    fn namespace_labels<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, LookupError>> {
        let labels =
            (namespace != "default").then(|| BTreeMap::from([(wi_contract::USE_LABEL.to_owned(), "true".to_owned())]));
        futures::future::ready(Ok(labels)).boxed()
    }

    fn secret_provider_class<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, LookupError>> {
        let mut class = self.class.clone();
        class["metadata"]["namespace"] = Value::from(namespace);
        class["metadata"]["name"] = Value::from(name);
        futures::future::ready(Ok(Some(class))).boxed()
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn cached(&self) -> Vec<(&'static str, usize)> {
        Vec::new()
    }
}

fn lookup() -> &'static Everything {
    static LOOKUP: std::sync::OnceLock<Everything> = std::sync::OnceLock::new();
    LOOKUP.get_or_init(|| {
        let sa: Value = serde_json::from_str(include_str!(
            "../../webhook/tests/fixtures/admission/serviceaccounts/workload-sa.json"
        ))
        .expect("the ServiceAccount fixture is JSON");
        let account = ServiceAccount::from_object(&sa).expect("the fixture is a ServiceAccount");
        let class = wi_contract::yaml::from_str(include_str!(
            "../../webhook/tests/fixtures/extra/secretproviderclass-kv.yaml"
        ))
        .expect("the class fixture is YAML");
        Everything {
            annotations: account.annotations,
            class,
        }
    })
}

/// Answers `body`; returns the request (as JSON) and the response (as JSON), or `None` when the body is refused.
fn answer(body: &[u8], config: &Config) -> Option<(Value, Value)> {
    let review = AdmissionReview::parse(body).ok()?;
    let (response, _) = futures::executor::block_on(wi_webhook::admission::review(&review, lookup(), config));
    let json = response.to_json().expect("a response always encodes");
    let response: Value = serde_json::from_slice(&json).expect("the response is JSON");
    let request: Value = serde_json::from_slice(body).expect("a parsed body is JSON");
    Some((request, response))
}

fuzz_target!(|body: &[u8]| {
    let config = Config::default();
    let Some((mut request, response)) = answer(body, &config) else {
        return;
    };
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(
        response.pointer("/response/uid"),
        Some(request.pointer("/request/uid").unwrap_or(&Value::from(""))),
        "the response carries the request's uid"
    );
    let Some(patch) = decode_patch(&response).expect("a patch in a response decodes") else {
        return;
    };
    assert!(
        !patch
            .0
            .iter()
            .any(|op| matches!(op, json_patch::PatchOperation::Remove(_))),
        "the patch never removes: {patch:?}"
    );
    let pod = request["request"]["object"].clone();
    let was_a_pod = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(pod.clone()).is_ok();
    let mut patched = pod;
    json_patch::patch(&mut patched, &patch).expect("the patch applies to the pod it was made for");
    if was_a_pod {
        if let Err(e) = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(patched.clone()) {
            panic!("the patched pod is not a Pod any more: {e}");
        }
    }
    // Reinvocation: the API server sends the patched pod again.
    request["request"]["object"] = patched;
    let again = serde_json::to_vec(&request).expect("JSON encodes");
    let (_, second) = answer(&again, &config).expect("the patched review is read again");
    assert_eq!(
        second.pointer("/response/allowed"),
        Some(&Value::Bool(true)),
        "{second}"
    );
    assert_eq!(
        decode_patch(&second).expect("decodes"),
        None,
        "a second pass adds nothing"
    );
});
