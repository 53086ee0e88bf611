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

/// The content type Key Vault gives a certificate's secret kept as PEM.
pub const PEM_CONTENT_TYPE: &str = "application/x-pem-file";

/// The file content of a secret, as the Azure provider (v1.8) writes it:
///
/// 1. A certificate-backed secret (one with a `kid`) stored as PEM is its value; stored as PKCS#12, its PEM (the
///    PKCS#8 key, then the chain from leaf to root), or with `objectFormat: pfx` its value, which is Key Vault's
///    base64 text of the PFX. Any other content type of a certificate-backed secret is an error.
/// 2. Any other secret is its value, whatever its content type (a hand-uploaded `application/x-pkcs12` secret stays
///    base64 text) and whatever its `objectFormat`.
/// 3. Then `objectEncoding` decodes the result: `base64` makes the PFX text of `objectFormat: pfx` the PFX bytes.
pub fn secret(
    spec: &ObjectSpec,
    value: &str,
    content_type: Option<&str>,
    kid: Option<&str>,
) -> Result<Vec<u8>, String> {
    let certificate_backed = kid.is_some_and(|k| !k.is_empty());
    let content = match (certificate_backed, content_type) {
        (false, _) | (true, Some(PEM_CONTENT_TYPE)) => value.as_bytes().to_vec(),
        (true, Some(PKCS12_CONTENT_TYPE)) if spec.format == Format::Pfx => value.as_bytes().to_vec(),
        (true, Some(PKCS12_CONTENT_TYPE)) => {
            let pfx = base64_decode(value).map_err(|e| format!("the PKCS#12 value is not base64: {e}"))?;
            pkcs12_to_pem(&pfx)?
        }
        (true, other) => {
            return Err(format!(
                "a certificate-backed secret has content type {}: expected {PEM_CONTENT_TYPE} or {PKCS12_CONTENT_TYPE}",
                other.map_or_else(|| "(none)".to_owned(), |t| format!("{t:?}"))
            ));
        }
    };
    match spec.encoding {
        Encoding::Utf8 => Ok(content),
        Encoding::Base64 => {
            base64_decode(&content).map_err(|e| format!("objectEncoding base64, but the value is not base64: {e}"))
        }
        Encoding::Hex => {
            hex::decode(content.trim_ascii()).map_err(|e| format!("objectEncoding hex, but the value is not hex: {e}"))
        }
    }
}

fn base64_decode(value: impl AsRef<[u8]>) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(value.as_ref().trim_ascii())
}

/// A PFX with the empty password (as Key Vault exports it) as PEM, as the provider writes it (provider.go v1.8.2,
/// :604-656): every private key as PKCS#8 `PRIVATE KEY`, then every certificate, in the chain's order when they
/// form one (see [`chain_order`]).
pub fn pkcs12_to_pem(pfx: &[u8]) -> Result<Vec<u8>, String> {
    let (keys, certs) = match p12_keystore::Pkcs12Archive::from_pkcs12(pfx, "") {
        Ok(archive) => (
            archive.keys.iter().map(|k| k.key.as_der().to_vec()).collect(),
            archive.certs.iter().map(|c| c.cert.as_der().to_vec()).collect(),
        ),
        // The empty password is two zero bytes (a BMPString's terminator) to some writers and no bytes at all to
        // others (Windows; the first PFX of the provider's own TestDecodePKCS12): Go's pkcs12, which the provider
        // uses, and OpenSSL try both. p12-keystore tries the first only.
        Err(error) => bags_with_null_password(pfx).map_err(|fallback| {
            format!("the PKCS#12 value cannot be read with the empty password Key Vault uses: {error}; {fallback}")
        })?,
    };
    if keys.is_empty() {
        return Err("the PKCS#12 value holds no private key".to_owned());
    }
    let mut pem = Vec::new();
    for key in &keys {
        pem.extend(pem_block("PRIVATE KEY", &as_go_marshals_pkcs8(key)?)?);
    }
    for cert in chain_order(certs) {
        pem.extend(pem_block("CERTIFICATE", &cert)?);
    }
    Ok(pem)
}

/// A private key as Go's `x509.MarshalPKCS8PrivateKey` writes the key it parsed, which the provider writes: version
/// 0 and no attributes (Windows puts a key-usage attribute in the PFX's key; the provider's first TestDecodePKCS12
/// vector has one). The key itself is kept as stored: Go writes RSA's PKCS#1 from the same numbers.
fn as_go_marshals_pkcs8(der: &[u8]) -> Result<Vec<u8>, String> {
    use der::{Decode as _, Encode as _};
    let mut info = pkcs12::safe_bag::PrivateKeyInfo::from_der(der)
        .map_err(|e| format!("a private key of the PKCS#12 value is not PKCS#8: {e}"))?;
    info.attributes = None;
    info.to_der()
        .map_err(|e| format!("a private key of the PKCS#12 value cannot be re-encoded: {e}"))
}

/// Private keys (PKCS#8 DER) and certificates (DER), in the PFX's order.
type KeysAndCerts = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// The private keys (PKCS#8) and certificates of a PFX whose password is the empty byte string: the MAC checked and
/// the bags decrypted (PBES1: 3DES or 40-bit RC2 with SHA-1, what such PFX use) with the PKCS#12 KDF of no bytes.
fn bags_with_null_password(pfx: &[u8]) -> Result<KeysAndCerts, String> {
    use cms::content_info::ContentInfo;
    use cms::encrypted_data::EncryptedData;
    use der::asn1::{ContextSpecific, OctetString};
    use der::{Decode as _, Encode as _};
    use hmac::{KeyInit as _, Mac as _};
    use pkcs12::kdf::{Pkcs12KeyType, derive_key};
    use pkcs12::pbe_params::{EncryptedPrivateKeyInfo, Pkcs12PbeParams};
    use pkcs12::safe_bag::SafeContents;

    const NULL: &[u8] = &[];
    const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
    const ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
    let bad = |what: &'static str| move |e: der::Error| format!("{what}: {e}");
    let octets = |content: &ContentInfo| -> Result<Vec<u8>, String> {
        let der = content.content.to_der().map_err(bad("content"))?;
        Ok(OctetString::from_der(&der)
            .map_err(bad("content"))?
            .into_bytes()
            .into_vec())
    };
    let decrypt = |algorithm: &spki::AlgorithmIdentifierOwned, data: &[u8]| -> Result<Vec<u8>, String> {
        let params = algorithm.parameters.as_ref().ok_or("PBE without parameters")?;
        let params = Pkcs12PbeParams::from_der(&params.to_der().map_err(bad("PBE parameters"))?)
            .map_err(bad("PBE parameters"))?;
        let salt = params.salt.as_bytes();
        let key = |size| derive_key::<sha1::Sha1>(NULL, salt, Pkcs12KeyType::EncryptionKey, params.iterations, size);
        let iv = derive_key::<sha1::Sha1>(NULL, salt, Pkcs12KeyType::Iv, params.iterations, 8);
        use cbc::cipher::{BlockModeDecrypt as _, KeyIvInit as _, block_padding::Pkcs7};
        let unpadded = match algorithm.oid {
            pkcs12::PKCS_12_PBE_WITH_SHAAND3_KEY_TRIPLE_DES_CBC => {
                cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key(24), &iv)
                    .map_err(|_| "3DES key".to_owned())?
                    .decrypt_padded_vec::<Pkcs7>(data)
            }
            pkcs12::PKCS_12_PBEWITH_SHAAND40_BIT_RC2_CBC => cbc::Decryptor::<rc2::Rc2>::new_from_slices(&key(5), &iv)
                .map_err(|_| "RC2 key".to_owned())?
                .decrypt_padded_vec::<Pkcs7>(data),
            other => {
                return Err(format!(
                    "encryption {other} with the empty byte string is not supported"
                ));
            }
        };
        unpadded.map_err(|_| "does not decrypt with the empty byte string".to_owned())
    };

    let pfx = pkcs12::pfx::Pfx::from_der(pfx).map_err(bad("not a PFX"))?;
    let authenticated = octets(&pfx.auth_safe)?;
    let mac = pfx.mac_data.as_ref().ok_or("a PFX without a MAC")?;
    let mac_key = derive_key::<sha1::Sha1>(NULL, mac.mac_salt.as_bytes(), Pkcs12KeyType::Mac, mac.iterations, 20);
    let mut hmac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&mac_key).map_err(|_| "MAC key".to_owned())?;
    hmac.update(&authenticated);
    hmac.verify_slice(mac.mac.digest.as_bytes())
        .map_err(|_| "the MAC does not verify with the empty byte string either".to_owned())?;

    let safes = Vec::<ContentInfo>::from_der(&authenticated).map_err(bad("authenticated safe"))?;
    let (mut keys, mut certs) = (Vec::new(), Vec::new());
    for safe in &safes {
        let contents = match safe.content_type {
            DATA => octets(safe)?,
            ENCRYPTED_DATA => {
                let encrypted = EncryptedData::from_der(&safe.content.to_der().map_err(bad("safe"))?)
                    .map_err(bad("encrypted safe"))?;
                let info = &encrypted.enc_content_info;
                let data = info.encrypted_content.as_ref().map_or(&[][..], |c| c.as_bytes());
                decrypt(&info.content_enc_alg, data)?
            }
            other => return Err(format!("a safe of content type {other}")),
        };
        for bag in SafeContents::from_der(&contents).map_err(bad("safe contents"))? {
            match bag.bag_id {
                pkcs12::PKCS_12_CERT_BAG_OID => {
                    let cert: ContextSpecific<pkcs12::CertBag> =
                        ContextSpecific::from_der(&bag.bag_value).map_err(bad("certificate bag"))?;
                    certs.push(cert.value.cert_value.into_bytes().into_vec());
                }
                pkcs12::PKCS_12_PKCS8_KEY_BAG_OID => {
                    let key: ContextSpecific<EncryptedPrivateKeyInfo> =
                        ContextSpecific::from_der(&bag.bag_value).map_err(bad("key bag"))?;
                    keys.push(decrypt(
                        &key.value.encryption_algorithm,
                        key.value.encrypted_data.as_bytes(),
                    )?);
                }
                pkcs12::PKCS_12_KEY_BAG_OID => {
                    let key: ContextSpecific<pkcs12::safe_bag::PrivateKeyInfo> =
                        ContextSpecific::from_der(&bag.bag_value).map_err(bad("key bag"))?;
                    keys.push(key.value.to_der().map_err(bad("key bag"))?);
                }
                _ => {}
            }
        }
    }
    Ok((keys, certs))
}

/// The provider's order of a PFX's certificates (provider.go v1.8.2, :738-835): a certificate's parent is the
/// first other one whose subject key id is its authority key id; the leaf is the first that is nobody's parent;
/// the chain walks from the leaf up its parents. When that walk does not reach every certificate (a gap, a
/// cycle, no key ids), the PFX's own order, none dropped (:821-825).
pub fn chain_order(certs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::prelude::FromDer as _;
    // (subject key id, authority key id) of each certificate.
    type KeyIds = (Option<Vec<u8>>, Option<Vec<u8>>);
    let ids: Vec<KeyIds> = certs
        .iter()
        .map(|der| {
            let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(der) else {
                return (None, None);
            };
            let (mut subject, mut authority) = (None, None);
            for extension in cert.extensions() {
                match extension.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(id) => subject = Some(id.0.to_vec()),
                    ParsedExtension::AuthorityKeyIdentifier(aki) => {
                        authority = aki.key_identifier.as_ref().map(|id| id.0.to_vec());
                    }
                    _ => {}
                }
            }
            (subject, authority)
        })
        .collect();
    let n = certs.len();
    let mut parent: Vec<Option<usize>> = vec![None; n];
    let mut is_parent = vec![false; n];
    for i in 0..n {
        let Some(authority) = &ids[i].1 else { continue };
        if let Some(j) = (0..n).find(|&j| j != i && ids[j].0.as_ref() == Some(authority)) {
            parent[i] = Some(j);
            is_parent[j] = true;
        }
    }
    let mut order = Vec::with_capacity(n);
    let mut next = (0..n).find(|&i| !is_parent[i]);
    while let Some(i) = next {
        if order.len() == n || order.contains(&i) {
            break;
        }
        order.push(i);
        next = parent[i];
    }
    if order.len() != n {
        return certs;
    }
    let mut slots: Vec<Option<Vec<u8>>> = certs.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
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

    const KID: &str = "https://kv.vault.azure.net/keys/web/0123";

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
            Some(KID),
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

    /// The provider's rules for `objectFormat: pfx`: Key Vault's base64 text, the bytes only with
    /// `objectEncoding: base64`; a secret that is not certificate-backed is its value, whatever it says it is.
    #[test]
    fn objectformat_pfx_writes_the_base64_text_and_the_bytes_with_base64_encoding() {
        let (pfx, ..) = chain();
        let text = b64(&pfx);
        let pfx_spec = |encoding| spec(encoding, Format::Pfx);
        let written = |encoding, content_type, kid| secret(&pfx_spec(encoding), &text, content_type, kid).unwrap();
        assert_eq!(
            written(Encoding::Utf8, Some(PKCS12_CONTENT_TYPE), Some(KID)),
            text.as_bytes()
        );
        assert_eq!(written(Encoding::Base64, Some(PKCS12_CONTENT_TYPE), Some(KID)), pfx);
        // Uploaded by hand as a secret (no kid): the value, in pem format too.
        assert_eq!(
            written(Encoding::Utf8, Some(PKCS12_CONTENT_TYPE), None),
            text.as_bytes()
        );
        let pem = secret(
            &spec(Encoding::Utf8, Format::Pem),
            &text,
            Some(PKCS12_CONTENT_TYPE),
            None,
        )
        .unwrap();
        assert_eq!(pem, text.as_bytes());
        let err = secret(&spec(Encoding::Utf8, Format::Pem), &text, Some("text/plain"), Some(KID)).unwrap_err();
        assert!(err.contains("\"text/plain\"") && !err.contains(&text), "{err}");
    }

    /// A root, an intermediate it signed and a leaf the intermediate signed, as DER.
    fn three_levels() -> [Vec<u8>; 3] {
        let ca = |name: &str| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.use_authority_key_identifier_extension = true;
            params
        };
        let root_key = rcgen::KeyPair::generate().unwrap();
        let root = ca("root").self_signed(&root_key).unwrap();
        let root_issuer = rcgen::Issuer::new(ca("root"), root_key);
        let mid_key = rcgen::KeyPair::generate().unwrap();
        let mid = ca("intermediate").signed_by(&mid_key, &root_issuer).unwrap();
        let mid_issuer = rcgen::Issuer::new(ca("intermediate"), mid_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(vec!["leaf.example".to_owned()]).unwrap();
        leaf_params.use_authority_key_identifier_extension = true;
        let leaf = leaf_params.signed_by(&leaf_key, &mid_issuer).unwrap();
        [leaf.der().to_vec(), mid.der().to_vec(), root.der().to_vec()]
    }

    /// The provider's order: leaf, then its parents by key ids; with a gap, the PFX's order and nothing dropped.
    #[test]
    fn certificates_follow_the_chain_or_keep_their_order_when_it_has_a_gap() {
        let [leaf, mid, root] = three_levels();
        let shuffled = vec![root.clone(), leaf.clone(), mid.clone()];
        assert_eq!(chain_order(shuffled), vec![leaf.clone(), mid.clone(), root.clone()]);
        let gap = vec![root.clone(), leaf.clone()];
        assert_eq!(chain_order(gap.clone()), gap);
        assert_eq!(chain_order(vec![b"not a certificate".to_vec(), leaf.clone()]).len(), 2);
    }

    #[test]
    fn a_broken_pkcs12_is_an_error_without_the_value() {
        let value = b64(b"not a pfx at all");
        let err = secret(
            &spec(Encoding::Utf8, Format::Pem),
            &value,
            Some(PKCS12_CONTENT_TYPE),
            Some(KID),
        )
        .unwrap_err();
        assert!(err.contains("PKCS#12") && !err.contains(&value), "{err}");
    }

    #[test]
    fn encodings_are_decoded_and_pem_certificates_kept_as_stored() {
        let s = |e| spec(e, Format::Pem);
        assert_eq!(
            secret(&s(Encoding::Utf8), "héllo", None, None).unwrap(),
            "héllo".as_bytes()
        );
        assert_eq!(
            secret(&s(Encoding::Base64), "AAEC/w==", None, None).unwrap(),
            [0, 1, 2, 255]
        );
        assert_eq!(secret(&s(Encoding::Hex), "0001ff", None, None).unwrap(), [0, 1, 255]);
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            secret(&s(Encoding::Utf8), pem, Some(PEM_CONTENT_TYPE), Some(KID)).unwrap(),
            pem.as_bytes()
        );
        let err = secret(&s(Encoding::Hex), "zz-secret", None, None).unwrap_err();
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
