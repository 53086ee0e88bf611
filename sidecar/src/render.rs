//! File contents of each kind of Key Vault object, byte for byte as the Secrets Store CSI driver's Azure provider
//! writes them:
//!
//! - `secret`: the value, decoded per `objectEncoding`; a certificate-backed secret stored as PKCS#12 becomes PEM (the
//!   PKCS#8 private key, then the chain from leaf to root), or stays the raw PFX with `objectFormat: pfx`;
//! - `key`: the public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), for RSA and EC keys;
//! - `cert`: the leaf certificate as a PEM `CERTIFICATE` (no private key, no chain).
//!
//! PEM is written as Go's `pem.EncodeToMemory` writes it: 64-column base64 and `\n` line endings.
//!
//! Errors say what is wrong with the object and never include its value.

use azure_security_keyvault_keys::models::{CurveName, JsonWebKey, KeyType};
use base64::Engine as _;
use der::asn1::{BitString, ObjectIdentifier, UintRef};
use der::pem::LineEnding;
use der::{Any, Encode as _, EncodePem as _};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::config::{Encoding, Format, ObjectSpec};

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const P256K: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");

/// The content type Key Vault gives a certificate's secret kept as PKCS#12.
pub const PKCS12_CONTENT_TYPE: &str = "application/x-pkcs12";

/// The file content of a secret.
pub fn secret(spec: &ObjectSpec, value: &str, content_type: Option<&str>) -> Result<Vec<u8>, String> {
    let pkcs12 = content_type == Some(PKCS12_CONTENT_TYPE);
    if spec.format == Format::Pfx {
        if !pkcs12 {
            return Err(format!(
                "objectFormat pfx needs a certificate-backed secret stored as PKCS#12 ({PKCS12_CONTENT_TYPE}); \
                 this one has content type {}",
                content_type.unwrap_or("(none)")
            ));
        }
        return base64_decode(value).map_err(|e| format!("the PKCS#12 value is not base64: {e}"));
    }
    if pkcs12 {
        let pfx = base64_decode(value).map_err(|e| format!("the PKCS#12 value is not base64: {e}"))?;
        return pkcs12_to_pem(&pfx);
    }
    match spec.encoding {
        Encoding::Utf8 => Ok(value.as_bytes().to_vec()),
        Encoding::Base64 => {
            base64_decode(value).map_err(|e| format!("objectEncoding base64, but the value is not base64: {e}"))
        }
        Encoding::Hex => {
            hex::decode(value.trim()).map_err(|e| format!("objectEncoding hex, but the value is not hex: {e}"))
        }
    }
}

fn base64_decode(value: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(value.trim())
}

/// A PFX with the empty password (as Key Vault exports it) as PEM: the private key as PKCS#8, then the
/// certificates from leaf to root.
pub fn pkcs12_to_pem(pfx: &[u8]) -> Result<Vec<u8>, String> {
    use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
    let store = KeyStore::from_pkcs12(pfx, "", Pkcs12ImportPolicy::Strict)
        .map_err(|e| format!("the PKCS#12 value cannot be read with the empty password Key Vault uses: {e}"))?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or("the PKCS#12 value holds no private key with its certificate")?;
    let mut pem = pem_block("PRIVATE KEY", chain.key().as_der())?;
    for cert in chain.certs() {
        pem.extend(pem_block("CERTIFICATE", cert.as_der())?);
    }
    Ok(pem)
}

/// The file content of a certificate: its DER (`cer`) as PEM.
pub fn certificate(der: &[u8]) -> Result<Vec<u8>, String> {
    if der.is_empty() {
        return Err("Key Vault returned the certificate without its content (cer)".to_owned());
    }
    pem_block("CERTIFICATE", der)
}

/// The file content of a key: its public part as a PEM SubjectPublicKeyInfo.
pub fn public_key(jwk: &JsonWebKey) -> Result<Vec<u8>, String> {
    let missing = |field: &str| format!("the key has no {field}");
    let kty = jwk.kty.as_ref().ok_or_else(|| missing("kty"))?;
    let der_error = |e: der::Error| format!("cannot encode the public key: {e}");
    let (algorithm, key_bits) = match kty {
        KeyType::Rsa | KeyType::RsaHsm => {
            let n = jwk.n.as_deref().ok_or_else(|| missing("modulus (n)"))?;
            let e = jwk.e.as_deref().ok_or_else(|| missing("exponent (e)"))?;
            let rsa = pkcs1::RsaPublicKey {
                modulus: UintRef::new(n).map_err(der_error)?,
                public_exponent: UintRef::new(e).map_err(der_error)?,
            };
            let algorithm = AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            };
            (algorithm, rsa.to_der().map_err(der_error)?)
        }
        KeyType::Ec | KeyType::EcHsm => {
            let (curve, size) = match jwk.crv.as_ref().ok_or_else(|| missing("curve (crv)"))? {
                CurveName::P256 => (P256, 32),
                CurveName::P256K => (P256K, 32),
                CurveName::P384 => (P384, 48),
                CurveName::P521 => (P521, 66),
                other => return Err(format!("unsupported curve {other:?}")),
            };
            let x = jwk.x.as_deref().ok_or_else(|| missing("x coordinate"))?;
            let y = jwk.y.as_deref().ok_or_else(|| missing("y coordinate"))?;
            if x.len() > size || y.len() > size {
                return Err("the key's coordinates are longer than its curve allows".to_owned());
            }
            // Uncompressed point: 04 || X || Y, each left-padded to the field size.
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            for coordinate in [x, y] {
                point.resize(point.len() + size - coordinate.len(), 0);
                point.extend_from_slice(coordinate);
            }
            let algorithm = AlgorithmIdentifierOwned {
                oid: EC_PUBLIC_KEY,
                parameters: Some(Any::encode_from(&curve).map_err(der_error)?),
            };
            (algorithm, point)
        }
        other => {
            return Err(format!(
                "key type {other:?} has no public key to write (only RSA and EC keys)"
            ));
        }
    };
    let info = SubjectPublicKeyInfoOwned {
        algorithm,
        subject_public_key: BitString::from_bytes(&key_bits).map_err(der_error)?,
    };
    info.to_pem(LineEnding::LF).map(String::into_bytes).map_err(der_error)
}

fn pem_block(label: &str, der: &[u8]) -> Result<Vec<u8>, String> {
    der::pem::encode_string(label, LineEnding::LF, der)
        .map(String::into_bytes)
        .map_err(|e| format!("cannot write {label} as PEM: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ObjectType;

    fn spec(encoding: Encoding, format: Format) -> ObjectSpec {
        ObjectSpec {
            name: "s".into(),
            object_type: ObjectType::Secret,
            version: None,
            file_name: "s".into(),
            encoding,
            format,
            mode: 0o644,
            version_history: 1,
        }
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// A CA and a leaf it signed, with the leaf's key, and the PFX Key Vault would keep.
    fn chain() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test root");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(vec!["app.example".to_owned()]).unwrap();
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "app.example");
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let key_der = leaf_key.serialize_der();
        let mut store = p12_keystore::KeyStore::new();
        let entry = p12_keystore::PrivateKeyChain::new(
            vec![1u8; 20],
            p12_keystore::PrivateKey::from_der(&key_der).unwrap(),
            [
                p12_keystore::Certificate::from_der(leaf.der()).unwrap(),
                p12_keystore::Certificate::from_der(ca.der()).unwrap(),
            ],
        );
        store.add_entry("app", p12_keystore::KeyStoreEntry::PrivateKeyChain(entry));
        let pfx = store.writer("").write().unwrap();
        (pfx, key_der, leaf.der().to_vec(), ca.der().to_vec())
    }

    #[test]
    fn a_pkcs12_secret_becomes_the_pkcs8_key_then_the_chain_leaf_to_root() {
        let (pfx, key, leaf, ca) = chain();
        let pem = secret(
            &spec(Encoding::Utf8, Format::Pem),
            &b64(&pfx),
            Some(PKCS12_CONTENT_TYPE),
        )
        .unwrap();
        let expected = [
            pem_block("PRIVATE KEY", &key).unwrap(),
            pem_block("CERTIFICATE", &leaf).unwrap(),
            pem_block("CERTIFICATE", &ca).unwrap(),
        ]
        .concat();
        assert_eq!(String::from_utf8(pem).unwrap(), String::from_utf8(expected).unwrap());
    }

    #[test]
    fn objectformat_pfx_writes_the_pfx_bytes_and_refuses_other_secrets() {
        let (pfx, ..) = chain();
        let out = secret(
            &spec(Encoding::Utf8, Format::Pfx),
            &b64(&pfx),
            Some(PKCS12_CONTENT_TYPE),
        )
        .unwrap();
        assert_eq!(out, pfx);
        let err = secret(&spec(Encoding::Utf8, Format::Pfx), "plain", None).unwrap_err();
        assert!(err.contains("objectFormat pfx") && !err.contains("plain"), "{err}");
    }

    #[test]
    fn a_broken_pkcs12_is_an_error_without_the_value() {
        let value = b64(b"not a pfx at all");
        let err = secret(&spec(Encoding::Utf8, Format::Pem), &value, Some(PKCS12_CONTENT_TYPE)).unwrap_err();
        assert!(err.contains("PKCS#12") && !err.contains(&value), "{err}");
    }

    #[test]
    fn encodings_are_decoded_and_pem_certificates_kept_as_stored() {
        let s = |e| spec(e, Format::Pem);
        assert_eq!(secret(&s(Encoding::Utf8), "héllo", None).unwrap(), "héllo".as_bytes());
        assert_eq!(secret(&s(Encoding::Base64), "AAEC/w==", None).unwrap(), [0, 1, 2, 255]);
        assert_eq!(secret(&s(Encoding::Hex), "0001ff", None).unwrap(), [0, 1, 255]);
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            secret(&s(Encoding::Utf8), pem, Some("application/x-pem-file")).unwrap(),
            pem.as_bytes()
        );
        let err = secret(&s(Encoding::Hex), "zz-secret", None).unwrap_err();
        assert!(!err.contains("zz-secret"), "{err}");
    }

    #[test]
    fn an_ec_key_is_the_spki_of_its_point() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        let jwk = JsonWebKey {
            kty: Some(KeyType::Ec),
            crv: Some(CurveName::P256),
            x: Some(raw[1..33].to_vec()),
            y: Some(raw[33..].to_vec()),
            ..Default::default()
        };
        let pem = String::from_utf8(public_key(&jwk).unwrap()).unwrap();
        assert_eq!(pem, pair.public_key_pem());
    }

    #[test]
    fn an_rsa_key_is_the_spki_of_modulus_and_exponent() {
        // An RSA public key as `openssl rsa -pubout -outform DER` writes it (tests/data), and its modulus and exponent.
        let der = include_bytes!("../tests/data/rsa-2048-spki.der");
        use der::Decode as _;
        let info = spki::SubjectPublicKeyInfoRef::from_der(der).unwrap();
        let rsa = pkcs1::RsaPublicKey::<UintRef<'_>>::from_der(info.subject_public_key.raw_bytes()).unwrap();
        let jwk = JsonWebKey {
            kty: Some(KeyType::RsaHsm),
            n: Some(rsa.modulus.as_bytes().to_vec()),
            e: Some(rsa.public_exponent.as_bytes().to_vec()),
            ..Default::default()
        };
        assert_eq!(public_key(&jwk).unwrap(), pem_block("PUBLIC KEY", der).unwrap());
    }

    #[test]
    fn keys_without_a_public_part_are_refused() {
        let jwk = JsonWebKey {
            kty: Some(KeyType::Oct),
            ..Default::default()
        };
        assert!(public_key(&jwk).unwrap_err().contains("Oct"));
        assert!(public_key(&JsonWebKey::default()).unwrap_err().contains("kty"));
        assert!(certificate(&[]).unwrap_err().contains("cer"));
    }
}
