//! From the files of a mount to the data of a Secret, as the Secrets Store CSI driver maps them
//! (`pkg/util/secretutil/secret.go`): `data[].objectName` names a file (the object's alias if it has one), whose bytes
//! become `data[].key` unchanged; for `kubernetes.io/tls`, `tls.crt` is every certificate of the file and `tls.key`
//! its private key, re-encoded as the driver re-encodes them. Errors name the object and the key, never a value.

use std::collections::BTreeMap;

use der::pem::LineEnding;
use der::{Any, Decode as _, Encode as _, Tag, TagNumber, Tagged as _};
use pkcs8::PrivateKeyInfoRef;
use sha2::{Digest as _, Sha256};
use wi_contract::secret_objects::{SecretObject, TLS_TYPE};
use wi_vault::FileContent;
use x509_parser::pem::Pem;

const RSA_ENCRYPTION: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// The data of the Secret of `object`, from the files of one fetch.
pub fn data(object: &SecretObject, files: &BTreeMap<String, FileContent>) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut data = BTreeMap::new();
    for entry in &object.data {
        let file = files.get(&entry.object_name).ok_or_else(|| {
            let known: Vec<&str> = files.keys().map(String::as_str).collect();
            format!(
                "objectName {:?} (key {}) is no object of the class: the objects are {} (an object with objectAlias \
                 is named by its alias)",
                entry.object_name,
                entry.key,
                known.join(", ")
            )
        })?;
        let bytes = if object.secret_type == TLS_TYPE {
            let what = |e: String| format!("objectName {:?} (key {}): {e}", entry.object_name, entry.key);
            match entry.key.as_str() {
                "tls.crt" => certificates(&file.data).map_err(what)?,
                _ => private_key(&file.data).map_err(what)?,
            }
        } else {
            file.data.clone()
        };
        data.insert(entry.key.clone(), bytes);
    }
    Ok(data)
}

/// A hash of a Secret's type and data, to tell a change from a re-sync (hex SHA-256, over sorted keys).
pub fn content_hash(secret_type: &str, data: &BTreeMap<String, Vec<u8>>) -> String {
    let mut hash = Sha256::new();
    hash.update(secret_type.as_bytes());
    for (key, value) in data {
        hash.update([0]);
        hash.update(key.as_bytes());
        hash.update([0]);
        hash.update((value.len() as u64).to_be_bytes());
        hash.update(value);
    }
    hex::encode(hash.finalize())
}

fn blocks(bytes: &[u8]) -> Vec<Pem> {
    Pem::iter_from_buffer(bytes).map_while(Result::ok).collect()
}

fn pem(label: &str, der: &[u8]) -> Result<Vec<u8>, String> {
    der::pem::encode_string(label, LineEnding::LF, der)
        .map(String::into_bytes)
        .map_err(|e| format!("cannot encode {label}: {e}"))
}

/// The file's PEM blocks, or, when it has none of the kind `wanted` picks, those of its PKCS#12 reading (empty
/// password), as the driver falls back; `what` names the kind in the error.
fn blocks_or_pkcs12(bytes: &[u8], wanted: fn(&Pem) -> bool, what: &str) -> Result<Vec<Pem>, String> {
    let found = blocks(bytes);
    if found.iter().any(wanted) {
        return Ok(found);
    }
    let converted = wi_vault::render::pkcs12_to_pem(bytes)
        .map_err(|e| format!("no PEM {what} in it, and not a PKCS#12 file either ({e})"))?;
    let found = blocks(&converted);
    match found.iter().any(wanted) {
        true => Ok(found),
        false => Err(format!("no {what} in it")),
    }
}

fn is_certificate(block: &Pem) -> bool {
    block.label == "CERTIFICATE"
}

/// Every `CERTIFICATE` block, in file order, re-encoded; a file with none is read as PKCS#12 with an empty password.
fn certificates(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for block in blocks_or_pkcs12(bytes, is_certificate, "certificate")?
        .iter()
        .filter(|b| is_certificate(b))
    {
        out.extend(pem("CERTIFICATE", &block.contents)?);
    }
    Ok(out)
}

/// The last block that is not a certificate, as `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1 with its
/// curve); a file with none is read as PKCS#12 with an empty password.
fn private_key(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let blocks = blocks_or_pkcs12(bytes, |b| !is_certificate(b), "private key")?;
    match blocks.iter().rev().find(|b| !is_certificate(b)) {
        Some(block) => key_block(block),
        None => Err("no private key in it".to_owned()),
    }
}

fn key_block(block: &Pem) -> Result<Vec<u8>, String> {
    match block.label.as_str() {
        "RSA PRIVATE KEY" | "EC PRIVATE KEY" => pem(&block.label, &block.contents),
        "PRIVATE KEY" => {
            let info = PrivateKeyInfoRef::from_der(&block.contents)
                .map_err(|e| format!("the PRIVATE KEY block is not PKCS#8: {e}"))?;
            let inner = info.private_key.as_bytes();
            match info.algorithm.oid {
                // PKCS#8 holds the PKCS#1 RSAPrivateKey as it is.
                RSA_ENCRYPTION => pem("RSA PRIVATE KEY", inner),
                EC_PUBLIC_KEY => {
                    let curve = info
                        .algorithm
                        .parameters
                        .ok_or("the EC key names no curve")?
                        .decode_as::<der::asn1::ObjectIdentifier>()
                        .map_err(|e| format!("the EC key's curve: {e}"))?;
                    pem("EC PRIVATE KEY", &sec1_with_curve(inner, curve)?)
                }
                other => Err(format!(
                    "a private key of algorithm {other}: only RSA and ECDSA keys go into a {TLS_TYPE} Secret (as \
                     the CSI driver)"
                )),
            }
        }
        other => Err(format!(
            "a {other:?} block where a private key was expected (encrypted keys are not supported)"
        )),
    }
}

/// SEC1 `ECPrivateKey` with the named curve in its `parameters` (`[0]`), as Go's `x509.MarshalECPrivateKey` writes
/// it: inside PKCS#8 the curve is in the algorithm identifier instead, and a bare SEC1 key without it names no curve.
fn sec1_with_curve(sec1: &[u8], curve: der::asn1::ObjectIdentifier) -> Result<Vec<u8>, String> {
    let invalid = |e: der::Error| format!("the EC key is not SEC1: {e}");
    let fields: Vec<Any> = Vec::from_der(sec1).map_err(invalid)?;
    let parameters_tag = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber(0),
    };
    if fields.iter().any(|f| f.tag() == parameters_tag) {
        return Ok(sec1.to_vec());
    }
    let [version, key, rest @ ..] = fields.as_slice() else {
        return Err("the EC key is not SEC1: too few fields".to_owned());
    };
    let parameters = Any::new(parameters_tag, curve.to_der().map_err(invalid)?).map_err(invalid)?;
    let mut out = vec![version.clone(), key.clone(), parameters];
    out.extend(rest.iter().cloned());
    out.to_der().map_err(invalid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wi_contract::secret_objects::SecretKey;

    fn files(entries: &[(&str, &[u8])]) -> BTreeMap<String, FileContent> {
        entries
            .iter()
            .map(|(name, data)| {
                (
                    (*name).to_owned(),
                    FileContent {
                        data: data.to_vec(),
                        mode: 0o644,
                    },
                )
            })
            .collect()
    }

    fn object(secret_type: &str, data: &[(&str, &str)]) -> SecretObject {
        SecretObject {
            secret_name: "s".into(),
            secret_type: secret_type.into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            data: data
                .iter()
                .map(|(object_name, key)| SecretKey {
                    object_name: (*object_name).into(),
                    key: (*key).into(),
                })
                .collect(),
        }
    }

    /// A key pair; RSA ones from aws-lc-rs, which rcgen cannot generate with ring.
    fn generate(algorithm: &'static rcgen::SignatureAlgorithm) -> rcgen::KeyPair {
        if algorithm != &rcgen::PKCS_RSA_SHA256 {
            return rcgen::KeyPair::generate_for(algorithm).unwrap();
        }
        use aws_lc_rs::encoding::AsDer as _;
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = rsa.as_der().unwrap();
        let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_ref().to_vec());
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, algorithm).unwrap()
    }

    /// A key and a certificate chain (leaf, then its CA) in one PEM, as Key Vault keeps a PEM certificate's secret.
    fn site(algorithm: &'static rcgen::SignatureAlgorithm) -> (String, rcgen::KeyPair, Vec<String>) {
        let ca_key = generate(algorithm);
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = generate(algorithm);
        let leaf = rcgen::CertificateParams::new(vec!["app.example".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let certs = vec![leaf.pem(), ca_cert.pem()];
        (format!("{}{}{}", key.serialize_pem(), certs[0], certs[1]), key, certs)
    }

    #[test]
    fn opaque_data_is_the_files_bytes_under_their_keys() {
        let data = data(
            &object("Opaque", &[("db-password", "DB_PASSWORD"), ("cfg/0", "old")]),
            &files(&[("db-password", b"s3cret\n"), ("cfg/0", b"\x00\xff")]),
        )
        .unwrap();
        assert_eq!(data["DB_PASSWORD"], b"s3cret\n");
        assert_eq!(data["old"], b"\x00\xff");
    }

    #[test]
    fn a_missing_object_is_named_with_the_objects_there_are() {
        let error = data(&object("Opaque", &[("nope", "K")]), &files(&[("a", b"1"), ("b", b"2")])).unwrap_err();
        assert!(error.contains("\"nope\" (key K)") && error.contains("a, b"), "{error}");
    }

    #[test]
    fn tls_splits_the_chain_and_the_rsa_or_ec_key_as_the_driver_does() {
        for (algorithm, label) in [
            (&rcgen::PKCS_RSA_SHA256, "RSA PRIVATE KEY"),
            (&rcgen::PKCS_ECDSA_P256_SHA256, "EC PRIVATE KEY"),
        ] {
            let (file, key, certs) = site(algorithm);
            let data = data(
                &object(TLS_TYPE, &[("site", "tls.key"), ("site", "tls.crt")]),
                &files(&[("site", file.as_bytes())]),
            )
            .unwrap();
            let crt = String::from_utf8(data["tls.crt"].clone()).unwrap();
            assert_eq!(crt, certs.concat(), "the chain, leaf first");
            let key_pem = String::from_utf8(data["tls.key"].clone()).unwrap();
            assert!(key_pem.starts_with(&format!("-----BEGIN {label}-----\n")), "{key_pem}");
            // The re-encoded key is the same key: its public half is the certificate's.
            let block = blocks(key_pem.as_bytes()).remove(0);
            let fields: Vec<Any> = Vec::from_der(&block.contents).unwrap();
            let public = match label {
                // RSAPrivateKey: version, modulus, ...
                "RSA PRIVATE KEY" => fields[1].value().to_vec(),
                // ECPrivateKey: version, key, [0] curve, [1] public key.
                _ => {
                    assert_eq!(fields.len(), 4, "version, key, curve, public key");
                    fields[3].value().to_vec()
                }
            };
            let raw = key.public_key_raw();
            let middle = &public[public.len() / 2..public.len() / 2 + 16];
            assert!(
                raw.windows(16).any(|w| w == middle),
                "{label}: the key's public half is not the certificate's"
            );
        }
    }

    #[test]
    fn tls_refuses_a_file_without_a_key_and_other_algorithms() {
        let (_, _, certs) = site(&rcgen::PKCS_ECDSA_P256_SHA256);
        let error = data(
            &object(TLS_TYPE, &[("c", "tls.key")]),
            &files(&[("c", certs.concat().as_bytes())]),
        )
        .unwrap_err();
        assert!(
            error.starts_with("objectName \"c\" (key tls.key): no PEM private key"),
            "{error}"
        );
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let error = data(
            &object(TLS_TYPE, &[("k", "tls.key")]),
            &files(&[("k", ed.serialize_pem().as_bytes())]),
        )
        .unwrap_err();
        assert!(error.contains("only RSA and ECDSA"), "{error}");
    }

    #[test]
    fn the_content_hash_changes_with_any_byte_and_the_type() {
        let a = BTreeMap::from([("k".to_owned(), b"v".to_vec())]);
        let b = BTreeMap::from([("k".to_owned(), b"w".to_vec())]);
        assert_eq!(content_hash("Opaque", &a), content_hash("Opaque", &a.clone()));
        assert_ne!(content_hash("Opaque", &a), content_hash("Opaque", &b));
        assert_ne!(content_hash("Opaque", &a), content_hash(TLS_TYPE, &a));
    }
}
