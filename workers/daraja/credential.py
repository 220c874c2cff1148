"""The B2C SecurityCredential: the initiator password encrypted with M-Pesa's certificate
(RSA PKCS#1 v1.5), base64-encoded (docs/daraja.md §4.1). The same credential may be reused."""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def security_credential(initiator_password: str, certificate_pem: bytes) -> str:
    public_key = x509.load_pem_x509_certificate(certificate_pem).public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError("the M-Pesa certificate must hold an RSA key")
    return base64.b64encode(public_key.encrypt(initiator_password.encode(), padding.PKCS1v15())).decode()
