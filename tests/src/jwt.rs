//! RS256 signing keys with their JWKS, for the service account issuer and for Entra ID's access tokens.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// An RSA key that signs RS256 JWTs, identified by `kid`.
pub struct Signer {
    kid: String,
    encoding: EncodingKey,
    n: String,
    e: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// A JWT that does not verify.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JwtError(pub String);

impl Signer {
    /// A new 2048-bit RSA key.
    pub fn generate() -> anyhow::Result<Self> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
        let pkcs8 = pair.as_der().map_err(|_| anyhow::anyhow!("RSA key encoding failed"))?;
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        );
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())?;
        let public = pair.public_key();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let n = b64(public.modulus().big_endian_without_leading_zero());
        let e = b64(public.exponent().big_endian_without_leading_zero());
        let kid = b64(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, n.as_bytes()).as_ref()[..16]);
        Ok(Signer { kid, encoding, n, e })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": self.n, "e": self.e})
    }

    /// The JWKS document with this key.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk()]})
    }

    /// Signs `claims` (RS256, with `kid` and `typ: JWT`).
    pub fn sign<T: Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// Verifies an RS256 JWT against a JWKS document: the key named by the token's `kid` (or the only key), the
/// signature, and `exp`/`nbf` (no leeway); audiences and issuers are left to the caller.
pub fn verify<T: DeserializeOwned>(token: &str, jwks: &Value) -> Result<T, JwtError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| JwtError(format!("malformed JWT: {e}")))?;
    if header.alg != Algorithm::RS256 {
        return Err(JwtError(format!("unsupported algorithm {:?}", header.alg)));
    }
    let keys = jwks["keys"].as_array().cloned().unwrap_or_default();
    let key = match &header.kid {
        Some(kid) => keys.iter().find(|k| k["kid"].as_str() == Some(kid.as_str())),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
    .ok_or_else(|| JwtError(format!("no key {:?} in the issuer's JWKS", header.kid)))?;
    let (Some(n), Some(e)) = (key["n"].as_str(), key["e"].as_str()) else {
        return Err(JwtError("the JWKS key is not an RSA key".to_owned()));
    };
    let decoding = DecodingKey::from_rsa_components(n, e).map_err(|e| JwtError(e.to_string()))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation.leeway = 0;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<T>(token, &decoding, &validation)
        .map(|data| data.claims)
        .map_err(|e| JwtError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_rejects_another_key_or_an_expired_token() {
        let signer = Signer::generate().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = signer.sign(&json!({"sub": "x", "exp": now + 60})).unwrap();
        let claims: Value = verify(&token, &signer.jwks()).unwrap();
        assert_eq!(claims["sub"], "x");

        let other = Signer::generate().unwrap();
        assert!(verify::<Value>(&token, &other.jwks()).is_err());
        let expired = signer.sign(&json!({"sub": "x", "exp": now - 10})).unwrap();
        let err = verify::<Value>(&expired, &signer.jwks()).unwrap_err().0;
        assert!(err.contains("Expired"), "{err}");
    }
}
