"""The emulator driven by Microsoft's official Python SDK (azure-identity's WorkloadIdentityCredential,
azure-keyvault-secrets' SecretClient): if these pass, the emulator speaks the wire protocol the real clients expect.

Run by scripts/test.sh after `cargo build -p wi-testbed --bin wi-emulator`; WI_EMULATOR overrides the binary.
"""

import json
import os
import pathlib
import ssl
import subprocess
import time
import urllib.request

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import WorkloadIdentityCredential
from azure.keyvault.certificates import CertificateClient
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient

ROOT = pathlib.Path(__file__).resolve().parents[2]
EMULATOR = os.environ.get("WI_EMULATOR", str(ROOT / "target" / "debug" / "wi-emulator"))
TENANT = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f"
VAULT = "kv-techventure-001"
SUBJECT = "system:serviceaccount:default:my-app-sa"


@pytest.fixture(scope="module")
def emulator():
    proc = subprocess.Popen([EMULATOR, "--vault", VAULT, "--tenant-id", TENANT], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        yield info
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0, "wi-emulator did not stop cleanly on SIGTERM"


def admin(info, method, path, body=None):
    context = ssl.create_default_context(cafile=info["ca_file"])
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        info["admin"] + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        text = response.read()
        return json.loads(text) if text else None


@pytest.fixture(scope="module")
def world(emulator, tmp_path_factory):
    identity = admin(emulator, "POST", "/identities", {"name": "mi-aks-workload", "tenant_id": TENANT})
    admin(
        emulator,
        "POST",
        f"/identities/{identity['client_id']}/federated-credentials",
        {"issuer": emulator["issuer"], "subject": SUBJECT},
    )
    # The vault given on the command line; another one through the admin API.
    vault_url = emulator["vaults"][VAULT]
    other = admin(emulator, "POST", "/vaults", {"name": "kv-other", "tenant_id": TENANT})
    assert other["url"].startswith("https://127.0.0.1:") and other["url"] != vault_url
    admin(emulator, "POST", f"/vaults/{VAULT}/access", {"principal_id": identity["principal_id"], "permissions": ["get", "list"]})
    v1 = admin(emulator, "PUT", f"/vaults/{VAULT}/secrets/MyWebAppSecret", {"value": "SuperSecureValue123!"})["version"]
    v2 = admin(emulator, "PUT", f"/vaults/{VAULT}/secrets/MyWebAppSecret", {"value": "RotatedValue456!"})["version"]
    admin(
        emulator,
        "PUT",
        f"/vaults/{VAULT}/secrets/web-cert",
        {"value": "-----BEGIN PRIVATE KEY-----\n...", "content_type": "application/x-pem-file", "certificate": True},
    )
    token = admin(emulator, "POST", "/service-account-tokens", {"namespace": "default", "name": "my-app-sa"})["token"]
    token_file = tmp_path_factory.mktemp("token") / "azure-identity-token"
    token_file.write_text(token)
    # Keys and certificates live in the other vault, so that the secrets listing above stays as it is.
    admin(emulator, "POST", "/vaults/kv-other/access", {"principal_id": identity["principal_id"], "permissions": ["get", "list"]})
    keys = {kty: admin(emulator, "POST", f"/vaults/kv-other/keys/signing-{kty.lower()}", {"kty": kty}) for kty in ("RSA", "EC")}
    cert = admin(emulator, "POST", "/vaults/kv-other/certificates/web", {"subject": "web.example"})
    return {
        "info": emulator,
        "identity": identity,
        "vault_url": vault_url,
        "other_url": other["url"],
        "v1": v1,
        "v2": v2,
        "token_file": str(token_file),
        "keys": keys,
        "cert": cert,
    }


def credential(world, client_id=None):
    info = world["info"]
    return WorkloadIdentityCredential(
        tenant_id=TENANT,
        client_id=client_id or world["identity"]["client_id"],
        token_file_path=world["token_file"],
        authority=info["authority_host"],
        connection_verify=info["ca_file"],
    )


def client(world, client_id=None, kind=SecretClient, url=None, **kwargs):
    return kind(
        url or world["vault_url"],
        credential(world, client_id),
        verify_challenge_resource=False,
        connection_verify=world["info"]["ca_file"],
        **kwargs,
    )


def test_get_latest_and_by_version(world):
    secrets = client(world)
    latest = secrets.get_secret("MyWebAppSecret")
    assert latest.value == "RotatedValue456!"
    assert latest.properties.version == world["v2"]
    assert secrets.get_secret("MyWebAppSecret", world["v1"]).value == "SuperSecureValue123!"


def test_list_secrets_and_versions(world):
    secrets = client(world)
    names = sorted(p.name for p in secrets.list_properties_of_secrets())
    assert names == ["MyWebAppSecret", "web-cert"]
    versions = sorted(p.version for p in secrets.list_properties_of_secret_versions("MyWebAppSecret"))
    assert versions == sorted([world["v1"], world["v2"]])


def test_certificate_backed_secret(world):
    cert = client(world).get_secret("web-cert")
    assert cert.properties.content_type == "application/x-pem-file"
    assert cert.properties.managed is True
    assert "/keys/web-cert/" in cert.properties.key_id


def test_missing_secret_is_404(world):
    with pytest.raises(ResourceNotFoundError) as error:
        client(world).get_secret("nope")
    assert error.value.status_code == 404
    assert error.value.error.code == "SecretNotFound"


def test_identity_without_access_is_403(world):
    info = world["info"]
    outsider = admin(info, "POST", "/identities", {"name": "mi-other", "tenant_id": TENANT})
    admin(info, "POST", f"/identities/{outsider['client_id']}/federated-credentials", {"issuer": info["issuer"], "subject": SUBJECT})
    with pytest.raises(HttpResponseError) as error:
        client(world, outsider["client_id"]).get_secret("MyWebAppSecret")
    assert error.value.status_code == 403
    assert "does not have secrets get permission" in str(error.value)


def test_federated_credential_mismatch_is_aadsts700213(world):
    stranger = admin(world["info"], "POST", "/identities", {"name": "mi-no-federation", "tenant_id": TENANT})
    with pytest.raises(ClientAuthenticationError) as error:
        client(world, stranger["client_id"]).get_secret("MyWebAppSecret")
    assert "AADSTS700213" in str(error.value)


def test_429_then_success_honours_retry_after(world):
    info = world["info"]
    secrets = client(world)
    secrets.get_secret("MyWebAppSecret")  # token acquired
    before = admin(info, "GET", "/counters").get(f"{VAULT} get-secret", 0)
    admin(info, "PUT", "/faults", {"target": VAULT, "status": 429, "retry_after": 1, "times": 1})
    started = time.monotonic()
    assert secrets.get_secret("MyWebAppSecret").value == "RotatedValue456!"
    assert time.monotonic() - started >= 1.0
    after = admin(info, "GET", "/counters").get(f"{VAULT} get-secret", 0)
    assert after - before == 1, "the throttled request is not counted as served; the retry is"


def test_keys_give_the_public_key_of_rsa_and_ec(world):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    keys = client(world, kind=KeyClient, url=world["other_url"])
    for kty, expected in world["keys"].items():
        key = keys.get_key(f"signing-{kty.lower()}")
        assert key.properties.version == expected["version"]
        assert key.key_type == kty
        jwk = key.key
        if kty == "RSA":
            public = rsa.RSAPublicNumbers(int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")).public_key()
        else:
            assert jwk.crv == "P-256"
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), ec.SECP256R1()
            )
            public = numbers.public_key()
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert pem.decode() == expected["public_key_pem"]
    versions = [p.version for p in keys.list_properties_of_key_versions("signing-rsa")]
    assert versions == [world["keys"]["RSA"]["version"]]


def test_certificates_and_their_pkcs12_secret(world):
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    expected = world["cert"]
    certificates = client(world, kind=CertificateClient, url=world["other_url"])
    cert = certificates.get_certificate("web")
    assert cert.properties.version == expected["version"]
    assert cert.cer == ssl.PEM_cert_to_DER_cert(expected["leaf_pem"])
    assert cert.key_id.endswith(f"/keys/web/{expected['version']}")
    assert cert.secret_id.endswith(f"/secrets/web/{expected['version']}")
    assert [p.version for p in certificates.list_properties_of_certificate_versions("web")] == [expected["version"]]
    # The secret of the same name and version is the PFX, readable with the empty password.
    secret = client(world, url=world["other_url"]).get_secret("web")
    assert secret.properties.content_type == "application/x-pkcs12"
    assert secret.properties.version == expected["version"]
    key, leaf, chain = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
    assert leaf == x509.load_pem_x509_certificate(expected["leaf_pem"].encode())
    assert chain == [x509.load_pem_x509_certificate(expected["ca_pem"].encode())]
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert pkcs8.decode() == expected["key_pem"]
