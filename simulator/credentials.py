"""The simulator's stand-in for M-Pesa's public certificate, and the check of SecurityCredential.

Daraja clients encrypt the initiator password with Safaricom's certificate (RSA, PKCS#1 v1.5,
then base64; docs/daraja.md §4.1). The simulator mints its own key pair and self-signed certificate
when the app is built, publishes the certificate at ``/sim/cert.pem``, and decrypts credentials
with the private key. A client that encrypts with any other certificate gets ``2001``, exactly
like using the sandbox certificate against production.

Only the decrypting side lives here on purpose: the client writes its own encrypting side, so a
bug there cannot be hidden by sharing code with the simulator.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class SimulatorCredentials:
    """The key pair behind the simulator's certificate."""

    private_key: rsa.RSAPrivateKey
    certificate_pem: bytes


def generate_credentials(common_name: str = "apicrypt.safaricom.co.ke (simulator)") -> SimulatorCredentials:
    """A fresh 2048-bit RSA key and a self-signed certificate valid for ten years.

    2048 bits is what Safaricom's certificate uses; generating one takes well under a second.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "KE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetpay Daraja simulator"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return SimulatorCredentials(
        private_key=key,
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
    )


def decrypt_security_credential(credential: str, private_key: rsa.RSAPrivateKey) -> str | None:
    """The password inside a SecurityCredential, or None when it is not one of ours.

    None covers bad base64, a different key, different padding and non-UTF-8 plaintext: M-Pesa
    reports all of them the same way (2001), so the caller needs no detail.
    """
    try:
        ciphertext = base64.b64decode(credential.strip(), validate=True)
        plaintext = private_key.decrypt(ciphertext, padding.PKCS1v15())
        return plaintext.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def credential_matches(credential: str, private_key: rsa.RSAPrivateKey, password: str) -> bool:
    """True when the credential decrypts to ``password`` (compared in constant time)."""
    plaintext = decrypt_security_credential(credential, private_key)
    if plaintext is None:
        return False
    return hmac.compare_digest(plaintext.encode("utf-8"), password.encode("utf-8"))
