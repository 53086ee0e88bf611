#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/seeds/TARGET/) from the project's fixtures, plus a PKCS#12 file, a
certificate and JSON Web Keys made here with openssl. Run from anywhere; the seeds are committed, so this runs only
when the fixtures change: python3 fuzz/seeds.py"""
import base64, copy, glob, hashlib, json, os, shutil, subprocess, tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
seeds = os.path.join(root, "fuzz", "seeds")
fixtures = os.path.join(root, "webhook", "tests", "fixtures")
doctor = os.path.join(root, "webhook", "tests", "doctor", "checks")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    os.makedirs(os.path.join(seeds, target), exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(seeds, target, name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


shutil.rmtree(seeds, ignore_errors=True)

# admission: every captured AdmissionReview, and one asking for sidecar delivery of the fixture's class.
reviews = sorted(glob.glob(os.path.join(fixtures, "admission", "*.json")))
for path in reviews:
    put("admission", read(path))
review = json.loads(read(os.path.join(fixtures, "admission", "01-plain-pod.json")))
sidecar = copy.deepcopy(review)
sidecar["request"]["object"]["metadata"].setdefault("annotations", {}).update({
    "workload-identity.rs/secret-provider-class": "azure-kv-spc",
    "workload-identity.rs/secrets-delivery": "sidecar",
})
put("admission", json.dumps(sidecar, indent=1))
csi = copy.deepcopy(review)
csi["request"]["object"]["metadata"].setdefault("annotations", {})["workload-identity.rs/secret-provider-class"] = "c"
put("admission", json.dumps(csi))

# secret_provider_class and doctor_input: the classes and every doctor fixture.
texts = [read(p) for p in sorted(glob.glob(os.path.join(fixtures, "extra", "*.yaml")))]
texts += [read(p) for p in sorted(glob.glob(os.path.join(doctor, "*")))]
for text in texts:
    put("doctor_input", text)
    for document in text.decode().split("\n---"):
        if "SecretProviderClass" in document or "objects:" in document:
            put("secret_provider_class", document)

# render: selector byte, then the input (see fuzz_targets/render.rs).
with tempfile.TemporaryDirectory() as tmp:
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
            "-subj", "/CN=fuzz", "-days", "1")
    openssl("pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-passout", "pass:", "-out", "cert.pfx")
    openssl("x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.pem")
    openssl("req", "-x509", "-key", "ec.pem", "-out", "ec-cert.pem", "-subj", "/CN=fuzz-ec", "-days", "1")
    openssl("pkcs12", "-export", "-inkey", "ec.pem", "-in", "ec-cert.pem", "-passout", "pass:", "-out", "ec.pfx")
    openssl("x509", "-in", "ec-cert.pem", "-outform", "DER", "-out", "ec-cert.der")
    pfx, ec_pfx = read(os.path.join(tmp, "cert.pfx")), read(os.path.join(tmp, "ec.pfx"))
    der, ec_der = read(os.path.join(tmp, "cert.der")), read(os.path.join(tmp, "ec-cert.der"))
put("render", b"\x00" + pfx)
put("render", b"\x00" + ec_pfx)
put("render", b"\x01" + der)
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
put("render", b"\x02" + json.dumps({"kty": "RSA", "n": b64(b"\xc3" * 256), "e": "AQAB"}).encode())
put("render", b"\x02" + json.dumps({"kty": "EC", "crv": "P-256", "x": b64(b"\x01" * 32), "y": b64(b"\x02" * 32)}).encode())
for selector in (0x03, 0x0B, 0x13, 0x43, 0x83, 0xC3, 0xE3):
    put("render", bytes([selector]) + base64.b64encode(pfx))
put("render", b"\x03" + b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
put("render", b"\x13" + b"68656c6c6f")
put("render", b"\x04" + der + b"\xff" + ec_der)

# paths: objectAlias values kubelet accepts and refuses.
put("paths", "tls.pem\ndata/blob.bin\nnested/deeper/file")
put("paths", "..data\n../etc/passwd\n/abs\na/../b\n./x\nok")
put("paths", "a\na/b")

# snapshot: kubelet's layout, a plain directory, a loop.
put("snapshot", "d ..2026_12_08_00_00_00.1\nf ..2026_12_08_00_00_00.1/password hunter2\n"
    "l ..data ..2026_12_08_00_00_00.1\nl password ..data/password")
put("snapshot", "f config.json {}\nd nested\nf nested/tls.crt PEM\nf .hidden x")
put("snapshot", "d a\nl a/loop ..\nf a/file x")
print(f"seeds written under {os.path.relpath(seeds, root)}:",
      ", ".join(f"{t} {len(os.listdir(os.path.join(seeds, t)))}" for t in sorted(os.listdir(seeds))))
