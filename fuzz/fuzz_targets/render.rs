//! The sidecar's and the controller's renderers of what Key Vault returns (untrusted: a hand-uploaded secret can
//! hold anything): PKCS#12 to PEM, certificates, JSON Web Keys, a secret's value under every objectEncoding and
//! objectFormat, and the chain order. Beyond "never panics": PEM out is PEM, and ordering a chain keeps every
//! certificate exactly once.

#![no_main]

use azure_security_keyvault_keys::models::JsonWebKey;
use libfuzzer_sys::fuzz_target;
use wi_contract::spc::{Encoding, Format, ObjectSpec, ObjectType};
use wi_vault::render;

fn is_pem(text: &[u8], label: &str) -> bool {
    text.starts_with(format!("-----BEGIN {label}-----\n").as_bytes()) && text.ends_with(b"-----\n")
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => {
            if let Ok(pem) = render::pkcs12_to_pem(rest) {
                assert!(is_pem(&pem, "PRIVATE KEY"), "PEM out starts with the key");
            }
        }
        1 => {
            if let Ok(pem) = render::certificate(rest) {
                assert!(is_pem(&pem, "CERTIFICATE"));
            }
        }
        2 => {
            if let Ok(jwk) = serde_json::from_slice::<JsonWebKey>(rest)
                && let Ok(pem) = render::public_key(&jwk)
            {
                assert!(is_pem(&pem, "PUBLIC KEY"));
            }
        }
        3 => {
            let Ok(value) = std::str::from_utf8(rest) else {
                return;
            };
            let spec = ObjectSpec {
                name: "object".to_owned(),
                object_type: ObjectType::Secret,
                version: None,
                file_name: "object".to_owned(),
                encoding: [Encoding::Utf8, Encoding::Base64, Encoding::Hex][usize::from(selector >> 3) % 3],
                format: if selector & 0x20 == 0 { Format::Pem } else { Format::Pfx },
                mode: 0o644,
                version_history: 1,
            };
            let content_type = [
                None,
                Some(render::PEM_CONTENT_TYPE),
                Some(render::PKCS12_CONTENT_TYPE),
                Some("text/plain"),
            ][usize::from(selector >> 6)];
            let kid = (selector & 0x40 != 0).then_some("https://kv.vault.azure.net/keys/object/1");
            let _ = render::secret(&spec, value, content_type, kid);
        }
        _ => {
            // Certificates separated by 0xff bytes: the order keeps each one exactly once.
            let certs: Vec<Vec<u8>> = rest.split(|&b| b == 0xff).map(<[u8]>::to_vec).collect();
            let mut before = certs.clone();
            let mut after = render::chain_order(certs);
            before.sort();
            after.sort();
            assert_eq!(before, after, "chain_order is a permutation");
        }
    }
});
