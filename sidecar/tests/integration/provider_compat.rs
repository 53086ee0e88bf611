//! Drop-in for the Secrets Store CSI driver's Azure provider, proven by the provider's own tests: the expectations
//! of `pkg/provider/provider_test.go` (Azure/secrets-store-csi-driver-provider-azure) as cases, each citing the
//! provider test it comes from, run through what `wi-sidecar` runs: the SecretProviderClass parser, the vault URL
//! and the renderer that turns Key Vault's answer into file bytes. The two PKCS#12 vectors of `TestDecodePKCS12`
//! and the bytes the provider writes for them are in `tests/data/provider/` (checked independently with
//! `openssl pkcs12`).
//!
//! The rules of `provider.go` v1.8.2 that no provider test pins are cases too, citing the line (REFERENCE.md §3).
//! Where `wi-sidecar` differs, the case names the [`Difference`], each stated in docs/sidecar.md.
//! `tests/tests/integration/sidecar_sync.rs` runs the same rules end to end against the emulated Key Vault (file names,
//! `objectAlias`, `filePermission`, `objectVersionHistory` directories).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use wi_sidecar::config::{self, ObjectSpec, SyncConfig};
use wi_sidecar::fetch::vault_url;
use wi_sidecar::render::{self, PEM_CONTENT_TYPE, PKCS12_CONTENT_TYPE};

const KID: &str = "https://kv.vault.azure.net/keys/web/0123";

/// Why a case's expectation is not the provider's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Difference {
    /// `AZUREGERMANCLOUD` closed in 2021: refused with the choices; `--vault-url-template` reaches any other cloud.
    GermanCloudClosed,
}

/// What the provider writes, or refuses.
enum Expect {
    /// The class parses; the object's file is these bytes for this Key Vault secret (value, content type, kid).
    Secret {
        value: String,
        content_type: Option<&'static str>,
        kid: Option<&'static str>,
        bytes: Vec<u8>,
    },
    /// The class parses; its objects get this file name and mode.
    File { name: &'static str, mode: u32 },
    /// The class parses (nothing else is checked).
    Parses,
    /// The class is refused, the error naming this.
    Refused(&'static str),
    /// The Key Vault secret cannot be written, the error saying this (and never the value).
    Unwritable {
        value: &'static str,
        content_type: Option<&'static str>,
        kid: Option<&'static str>,
        error: &'static str,
    },
    /// The vault's URL for `cloudName`; `None`: the cloud is refused.
    VaultUrl(&'static str, Option<&'static str>),
}

struct Case {
    upstream: &'static str,
    /// `keyvaultName` of the class.
    vault: &'static str,
    /// The one object, as the lines of its YAML.
    object: &'static str,
    expect: Expect,
    differences: &'static [Difference],
}

fn data(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/data/provider/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn class(vault: &str, object: &str) -> String {
    let object: String = object.lines().map(|l| format!("      {l}\n")).collect();
    format!("keyvaultName: {vault}\nobjects: |\n  array:\n    - |\n{object}")
}

fn only_object(config: &SyncConfig) -> &ObjectSpec {
    assert_eq!(config.objects.len(), 1);
    &config.objects[0]
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let secret = |value: &str, bytes: &[u8]| Secret {
        value: value.to_owned(),
        content_type: None,
        kid: None,
        bytes: bytes.to_vec(),
    };
    let pfx_text = |name: &str| data(name).trim().to_owned();
    let mut cases = vec![
        // TestGetContentBytes: objectEncoding decodes a secret's value.
        Case {
            upstream: "TestGetContentBytes/No encoding specified for a secret",
            vault: "kv1",
            object: "objectName: s\nobjectType: secret",
            expect: secret("abcdefg", b"abcdefg"),
            differences: &[],
        },
        Case {
            upstream: "TestGetContentBytes/UTF-8 encoding",
            vault: "kv1",
            object: "objectName: s\nobjectType: secret\nobjectEncoding: utf-8",
            expect: secret("TestSecret1", b"TestSecret1"),
            differences: &[],
        },
        Case {
            upstream: "TestGetContentBytes/Base64 encoding",
            vault: "kv1",
            object: "objectName: s\nobjectType: secret\nobjectEncoding: base64",
            expect: secret("QmFzZTY0RW5jb2RlZFN0cmluZw==", b"Base64EncodedString"),
            differences: &[],
        },
        Case {
            upstream: "TestGetContentBytes/Hex encoding",
            vault: "kv1",
            object: "objectName: s\nobjectType: secret\nobjectEncoding: hex",
            expect: secret("486578456E636F646564537472696E67", b"HexEncodedString"),
            differences: &[],
        },
        Case {
            upstream: "TestGetContentBytes/Invalid encoding",
            vault: "kv1",
            object: "objectName: s\nobjectType: secret\nobjectEncoding: NotAnEncoding",
            expect: Refused("objects[0] (s).objectEncoding"),
            differences: &[],
        },
        // TestValidateObjectFormat.
        Case {
            upstream: "TestValidateObjectFormat/no object format specified",
            vault: "kv1",
            object: "objectName: c\nobjectType: cert",
            expect: Parses,
            differences: &[],
        },
        Case {
            upstream: "TestValidateObjectFormat/object format not valid",
            vault: "kv1",
            object: "objectName: s\nobjectType: secret\nobjectFormat: pkcs",
            expect: Refused("objects[0] (s).objectFormat"),
            differences: &[],
        },
        Case {
            upstream: "TestValidateObjectFormat/object format PFX, but object type not secret",
            vault: "kv1",
            object: "objectName: c\nobjectType: cert\nobjectFormat: pfx",
            expect: Refused("objects[0] (c).objectFormat"),
            differences: &[],
        },
        Case {
            upstream: "TestValidateObjectFormat/object format PFX case insensitive check",
            vault: "kv1",
            object: "objectName: s\nobjectType: secret\nobjectFormat: PFX",
            expect: Parses,
            differences: &[],
        },
        Case {
            upstream: "TestValidateObjectFormat/valid object format and type",
            vault: "kv1",
            object: "objectName: s\nobjectType: secret\nobjectFormat: pfx",
            expect: Parses,
            differences: &[],
        },
        // TestValidateObjectEncoding.
        Case {
            upstream: "TestValidateObjectEncoding/No encoding specified",
            vault: "kv1",
            object: "objectName: c\nobjectType: cert",
            expect: Parses,
            differences: &[],
        },
        Case {
            upstream: "TestValidateObjectEncoding/Invalid encoding specified",
            vault: "kv1",
            object: "objectName: s\nobjectType: secret\nobjectEncoding: utf-16",
            expect: Refused("objects[0] (s).objectEncoding"),
            differences: &[],
        },
        Case {
            upstream: "TestValidateObjectEncoding/Object Encoding Base64, but objectType is not secret",
            vault: "kv1",
            object: "objectName: c\nobjectType: cert\nobjectEncoding: base64",
            expect: Refused("objects[0] (c).objectEncoding"),
            differences: &[],
        },
        Case {
            upstream: "TestValidateObjectEncoding/Object Encoding case-insensitive check",
            vault: "kv1",
            object: "objectName: s\nobjectType: secret\nobjectEncoding: BasE64",
            expect: secret("QmFzZTY0RW5jb2RlZFN0cmluZw==", b"Base64EncodedString"),
            differences: &[],
        },
        Case {
            upstream: "TestValidateObjectEncoding/Valid ObjectEncoding and Type",
            vault: "kv1",
            object: "objectName: s\nobjectType: secret\nobjectEncoding: base64",
            expect: Parses,
            differences: &[],
        },
        // TestGetVaultURL: the vault name (3 to 24 letters, digits and dashes), then the URL in each cloud.
        Case {
            upstream: "TestGetVaultURL/vault name > 24",
            vault: "longkeyvaultnamewhichisnotvalid",
            object: "objectName: s\nobjectType: secret",
            expect: Refused("keyvaultName"),
            differences: &[],
        },
        Case {
            upstream: "TestGetVaultURL/vault name < 3",
            vault: "kv",
            object: "objectName: s\nobjectType: secret",
            expect: Refused("keyvaultName"),
            differences: &[],
        },
        Case {
            upstream: "TestGetVaultURL/vault name contains non alpha-numeric chars",
            vault: "kv_test",
            object: "objectName: s\nobjectType: secret",
            expect: Refused("keyvaultName"),
            differences: &[],
        },
        // TestDecodePKCS12: a certificate-backed secret kept as PKCS#12 becomes the PKCS#8 key, then the chain.
        Case {
            upstream: "TestDecodePKCS12/one certificate and key in pfx data",
            vault: "kv1",
            object: "objectName: web\nobjectType: secret",
            expect: Secret {
                value: pfx_text("decode-pkcs12-rsa.pfx.b64"),
                content_type: Some(PKCS12_CONTENT_TYPE),
                kid: Some(KID),
                bytes: data("decode-pkcs12-rsa.pem").into_bytes(),
            },
            differences: &[],
        },
        Case {
            upstream: "TestDecodePKCS12/multiple certificates and one key in pfx data",
            vault: "kv1",
            object: "objectName: web\nobjectType: secret",
            expect: Secret {
                value: pfx_text("decode-pkcs12-ec-chain.pfx.b64"),
                content_type: Some(PKCS12_CONTENT_TYPE),
                kid: Some(KID),
                bytes: data("decode-pkcs12-ec-chain.pem").into_bytes(),
            },
            differences: &[],
        },
        // provider.go v1.8.2, the rules of a secret's bytes (REFERENCE.md §3).
        Case {
            upstream: "provider.go:477-479 objectFormat pfx writes Key Vault's base64 text",
            vault: "kv1",
            object: "objectName: web\nobjectType: secret\nobjectFormat: pfx",
            expect: Secret {
                value: pfx_text("decode-pkcs12-rsa.pfx.b64"),
                content_type: Some(PKCS12_CONTENT_TYPE),
                kid: Some(KID),
                bytes: pfx_text("decode-pkcs12-rsa.pfx.b64").into_bytes(),
            },
            differences: &[],
        },
        Case {
            upstream: "provider.go:696-710 objectFormat pfx with objectEncoding base64 writes the PFX bytes",
            vault: "kv1",
            object: "objectName: web\nobjectType: secret\nobjectFormat: pfx\nobjectEncoding: base64",
            expect: Secret {
                value: pfx_text("decode-pkcs12-rsa.pfx.b64"),
                content_type: Some(PKCS12_CONTENT_TYPE),
                kid: Some(KID),
                bytes: base64::engine::general_purpose::STANDARD
                    .decode(pfx_text("decode-pkcs12-rsa.pfx.b64"))
                    .unwrap(),
            },
            differences: &[],
        },
        Case {
            upstream: "provider.go:501 a PKCS#12 secret without kid (uploaded by hand) is its value",
            vault: "kv1",
            object: "objectName: web\nobjectType: secret",
            expect: Secret {
                value: pfx_text("decode-pkcs12-ec-chain.pfx.b64"),
                content_type: Some(PKCS12_CONTENT_TYPE),
                kid: None,
                bytes: pfx_text("decode-pkcs12-ec-chain.pfx.b64").into_bytes(),
            },
            differences: &[],
        },
        Case {
            upstream: "provider.go:474 a certificate-backed secret kept as PEM is its value",
            vault: "kv1",
            object: "objectName: api\nobjectType: secret",
            expect: Secret {
                value: data("decode-pkcs12-rsa.pem"),
                content_type: Some(PEM_CONTENT_TYPE),
                kid: Some(KID),
                bytes: data("decode-pkcs12-rsa.pem").into_bytes(),
            },
            differences: &[],
        },
        Case {
            upstream: "provider.go:484-486 a certificate-backed secret of another content type is an error",
            vault: "kv1",
            object: "objectName: odd\nobjectType: secret",
            expect: Unwritable {
                value: "s3cr3t-value",
                content_type: Some("text/plain"),
                kid: Some(KID),
                error: "content type \"text/plain\"",
            },
            differences: &[],
        },
        // File names and modes (types.go: objectAlias, filePermission; 0644 by default).
        Case {
            upstream: "objectAlias names the file; filePermission is octal, 0644 by default",
            vault: "kv1",
            object: "objectName: db\nobjectType: secret\nobjectAlias: config/db.txt\nfilePermission: \"0600\"",
            expect: File {
                name: "config/db.txt",
                mode: 0o600,
            },
            differences: &[],
        },
        Case {
            upstream: "the object name is the file name without objectAlias",
            vault: "kv1",
            object: "objectName: db\nobjectType: secret",
            expect: File {
                name: "db",
                mode: 0o644,
            },
            differences: &[],
        },
    ];
    // TestGetVaultURL/valid vault name, in the provider's clouds; TestParseAzureEnvironment.
    for (cloud, url) in [
        ("", Some("https://testkv.vault.azure.net")),
        ("AZUREPUBLICCLOUD", Some("https://testkv.vault.azure.net")),
        ("AZURECHINACLOUD", Some("https://testkv.vault.azure.cn")),
        ("AZUREUSGOVERNMENTCLOUD", Some("https://testkv.vault.usgovcloudapi.net")),
        ("AZUREGERMANCLOUD", None),
        ("AZUREWRONGCLOUD", None),
    ] {
        cases.push(Case {
            upstream: Box::leak(format!("TestGetVaultURL/valid vault name in cloud {cloud:?}").into_boxed_str()),
            vault: "testkv",
            object: "objectName: s\nobjectType: secret",
            expect: VaultUrl(cloud, url),
            differences: if cloud == "AZUREGERMANCLOUD" {
                &[Difference::GermanCloudClosed]
            } else {
                &[]
            },
        });
    }
    cases
}

/// Provider tests not ported, with the reason.
const NOT_PORTED: &[(&str, &str)] = &[
    (
        "TestGetContentBytes/Certificate object type, /Key object type",
        "the helper leaves cert and key content as it is; their bytes are checked by render's unit tests and \
         tests/tests/integration/sidecar_sync.rs (leaf certificate PEM, PUBLIC KEY PEM)",
    ),
    (
        "TestParseAzureEnvironmentAzureStackCloud",
        "Azure Stack's environment file is not read: --vault-url-template gives any other cloud's vault URL",
    ),
    (
        "TestGetSecretsStoreObjectContent (mount config, identity modes)",
        "the identity modes are refused at parse time (contract/src/spc.rs tests); the mount plumbing is the CSI \
         driver's, not the sidecar's",
    ),
];

fn check(case: &Case) -> Result<(), String> {
    let parsed = config::parse(&class(case.vault, case.object));
    let config = match (&case.expect, parsed) {
        (Expect::Refused(part), Err(error)) if error.to_string().contains(part) => return Ok(()),
        (Expect::Refused(part), Err(error)) => return Err(format!("refused, but {error:?} does not name {part}")),
        (Expect::Refused(part), Ok(_)) => return Err(format!("parsed; want refused naming {part}")),
        (_, Err(error)) => return Err(format!("the class is refused: {error}")),
        (_, Ok(config)) => config,
    };
    let spec = only_object(&config);
    match &case.expect {
        Expect::Parses | Expect::Refused(_) => Ok(()),
        Expect::Secret {
            value,
            content_type,
            kid,
            bytes,
        } => {
            let written = render::secret(spec, value, *content_type, *kid)?;
            if written == *bytes {
                Ok(())
            } else {
                Err(format!(
                    "wrote {:?}, the provider writes {:?}",
                    String::from_utf8_lossy(&written),
                    String::from_utf8_lossy(bytes)
                ))
            }
        }
        Expect::Unwritable {
            value,
            content_type,
            kid,
            error,
        } => match render::secret(spec, value, *content_type, *kid) {
            Ok(_) => Err("written; the provider refuses it".to_owned()),
            Err(e) if e.contains(error) && !e.contains(value) => Ok(()),
            Err(e) => Err(format!("error {e:?}: want {error:?}, without the value")),
        },
        Expect::File { name, mode } => match (spec.file_name == *name, spec.mode == *mode) {
            (true, true) => Ok(()),
            _ => Err(format!(
                "file {:?} mode {:o}, want {name:?} {mode:o}",
                spec.file_name, spec.mode
            )),
        },
        Expect::VaultUrl(cloud, want) => {
            let cloud = Some(*cloud).filter(|c| !c.is_empty());
            match (vault_url(&config.keyvault_name, cloud, None), want) {
                (Ok(url), Some(want)) if url == *want => Ok(()),
                (Err(error), None) if error.contains(cloud.unwrap_or_default()) => Ok(()),
                (got, want) => Err(format!("{got:?}, want {want:?}")),
            }
        }
    }
}

#[test]
fn the_providers_tests_hold_with_every_difference_named() {
    let cases = cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| check(case).err().map(|e| format!("{}: {e}", case.upstream)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!("{} provider cases hold; not ported: {NOT_PORTED:?}", cases.len());
}

#[test]
fn every_difference_is_in_the_sidecar_docs() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/sidecar.md")).unwrap();
    let used: Vec<Difference> = cases().iter().flat_map(|c| c.differences.iter().copied()).collect();
    let phrase = |difference| match difference {
        Difference::GermanCloudClosed => "`AZUREGERMANCLOUD`",
    };
    let all = [Difference::GermanCloudClosed];
    for difference in all {
        assert!(used.contains(&difference), "{difference:?} is used by no case");
        assert!(
            readme.contains(phrase(difference)),
            "docs/sidecar.md does not state {difference:?}"
        );
    }
}
