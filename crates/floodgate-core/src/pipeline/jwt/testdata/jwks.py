"""Writes jwks.json and jwks-next.json from the public-key PEMs here."""
import base64
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n: int) -> str:
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def public(name):
    with open(f"{name}.pub.pem", "rb") as f:
        return serialization.load_pem_public_key(f.read())


def rsa_jwk(name, kid, **extra):
    key = public(name)
    assert isinstance(key, rsa.RSAPublicKey)
    numbers = key.public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": uint(numbers.n), "e": uint(numbers.e)} | extra


def ec_jwk(name, kid):
    key = public(name)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    numbers = key.public_numbers()
    return {"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
            "x": b64(numbers.x.to_bytes(32, "big")), "y": b64(numbers.y.to_bytes(32, "big"))}


def ed_jwk(name, kid):
    key = public(name)
    assert isinstance(key, ed25519.Ed25519PublicKey)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "kid": kid, "crv": "Ed25519", "alg": "EdDSA", "x": b64(raw)}


# The signing keys an identity provider publishes, plus keys the verifier
# must skip: an EdDSA key, an encryption key, and a key type it cannot parse.
keys = [
    rsa_jwk("rsa", "rsa-1"),
    ec_jwk("ec", "ec-1"),
    ed_jwk("ed25519", "ed-1"),
    rsa_jwk("attacker", "rsa-enc", use="enc", alg="RSA-OAEP"),
    {"kty": "ML-DSA", "kid": "pq-1", "pub": "AAAA"},
]
with open("jwks.json", "w") as f:
    json.dump({"keys": keys}, f, indent=2)
    f.write("\n")

# The key an identity provider rotates in.
with open("jwks-next.json", "w") as f:
    json.dump({"keys": [rsa_jwk("rsa-next", "rsa-2")]}, f, indent=2)
    f.write("\n")
