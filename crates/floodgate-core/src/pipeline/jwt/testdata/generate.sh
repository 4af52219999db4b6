#!/bin/sh
# Regenerates the JWT test fixtures (run once; the outputs are committed).
# Private keys are PKCS#8 PEM for jsonwebtoken's EncodingKey::from_*_pem;
# the JWKS files carry the public halves, derived from the keys by
# jwks.py, never typed by hand.
set -eu
cd "$(dirname "$0")"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa-next.pem
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out attacker.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem
openssl genpkey -algorithm ED25519 -out ed25519.pem
for key in rsa rsa-next attacker ec ed25519; do
    openssl pkey -in "$key.pem" -pubout -out "$key.pub.pem"
done
rm ed25519.pem
python3 jwks.py
