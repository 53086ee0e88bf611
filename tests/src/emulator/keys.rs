//! Key Vault keys: the bundle (the public JWK) served by the generic routes of [`super::vault`].

use serde_json::{Value, json};

use super::vault::{ObjectKind, attributes};
use super::*;

fn key_bundle(base: &str, name: &str, k: &KeyVersion, with_key: bool) -> Value {
    let kid = format!("{base}/keys/{name}/{}", k.version);
    let mut bundle = json!({"attributes": attributes(k.enabled, k.created), "tags": {}});
    if with_key {
        let mut jwk = k.jwk.clone();
        jwk["kid"] = json!(kid);
        bundle["key"] = jwk;
    } else {
        bundle["kid"] = json!(kid);
    }
    if k.managed {
        bundle["managed"] = json!(true);
    }
    bundle
}

impl ObjectKind for KeyVersion {
    const KIND: (&'static str, &'static str) = ("key", "Key");
    const COUNTER: &'static str = "key";
    fn versions<'a>(vault: &'a Vault, name: &str) -> Option<&'a Vec<Self>> {
        vault.keys.get(name)
    }
    fn bundle(&self, base: &str, name: &str, full: bool) -> Value {
        key_bundle(base, name, self, full)
    }
}
