//! Key Vault certificates: the bundle (the DER certificate) served by the generic routes of [`super::vault`].

use base64::Engine as _;
use serde_json::{Value, json};

use super::vault::{ObjectKind, attributes};
use super::*;

fn certificate_bundle(base: &str, name: &str, c: &CertificateVersion, with_cer: bool) -> Value {
    let x5t = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &c.cer);
    let mut bundle = json!({
        "id": format!("{base}/certificates/{name}/{}", c.version),
        "x5t": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x5t.as_ref()),
        "attributes": attributes(c.enabled, c.created),
        "tags": {},
    });
    if with_cer {
        bundle["kid"] = json!(format!("{base}/keys/{name}/{}", c.version));
        bundle["sid"] = json!(format!("{base}/secrets/{name}/{}", c.version));
        bundle["cer"] = json!(base64::engine::general_purpose::STANDARD.encode(&c.cer));
    }
    bundle
}

impl ObjectKind for CertificateVersion {
    const KIND: (&'static str, &'static str) = ("certificate", "Certificate");
    const COUNTER: &'static str = "certificate";
    fn versions<'a>(vault: &'a Vault, name: &str) -> Option<&'a Vec<Self>> {
        vault.certificates.get(name)
    }
    fn bundle(&self, base: &str, name: &str, full: bool) -> Value {
        certificate_bundle(base, name, self, full)
    }
}
