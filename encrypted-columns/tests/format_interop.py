#!/usr/bin/env python3
"""Decrypts every envelope vector in FORMAT.md with Python's `cryptography` package,
recomputes every blind-index vector (transforms, message, HMAC, truncation) and tenant
blind-index key derivation, and unwraps every
StaticKek wrapped-key vector (§9), using only what FORMAT.md says: proof that the spec is
complete enough for another language.

Run: python3 encrypted-columns/tests/format_interop.py   (needs `pip install cryptography`)
"""
import pathlib
import hmac
import hashlib
import re
import unicodedata
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SPEC = pathlib.Path(__file__).resolve().parent.parent / "FORMAT.md"


def lp(name: str) -> bytes:
    raw = name.encode()
    return struct.pack(">H", len(raw)) + raw


def derive(root: bytes, label: str, names) -> bytes:
    info = label.encode() + b"\x00" + b"".join(lp(n) for n in names)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"encrypted-columns/v1", info=info).derive(root)


def xaes_key(key: bytes, nonce: bytes) -> bytes:
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    l = int.from_bytes(ecb.update(bytes(16)), "big")
    k1 = (l << 1) & ((1 << 128) - 1)
    if l >> 127:
        k1 ^= 0x87
    k1 = k1.to_bytes(16, "big")
    xor = lambda a, b: bytes(x ^ y for x, y in zip(a, b))
    m1 = b"\x00\x01X\x00" + nonce[:12]
    m2 = b"\x00\x02X\x00" + nonce[:12]
    return ecb.update(xor(m1, k1)) + ecb.update(xor(m2, k1))


def open_envelope(roots: dict, table: str, column: str, env: bytes) -> bytes:
    if len(env) < 45:
        raise ValueError("malformed: too short")
    if env[0] != 1:
        raise ValueError("malformed: unsupported version")
    key_id = struct.unpack(">I", env[1:5])[0]
    if key_id not in roots:
        raise KeyError(f"unknown key id {key_id}")
    nonce, sealed = env[5:29], env[29:]
    column_key = derive(roots[key_id], "column-key", [table, column])
    aad = env[:5] + lp(table) + lp(column)
    return AESGCM(xaes_key(column_key, nonce)).decrypt(nonce[12:], sealed, aad)


def wrap_aad(key_id: int, purpose: str, subject: str) -> bytes:
    """FORMAT.md §9: format byte, domain label, u32 key id, u32-length-prefixed strings."""
    out = b"\x01" + b"encrypted-columns/kek/v1" + struct.pack(">I", key_id)
    for part in (purpose.encode(), subject.encode()):
        out += struct.pack(">I", len(part)) + part
    return out


def static_unwrap(kek: bytes, key_id: int, purpose: str, subject: str, wrapped: bytes) -> bytes:
    """FORMAT.md §9, StaticKek: XAES-256-GCM keyed by the KEK bytes themselves."""
    if len(wrapped) != 73 or wrapped[0] != 1:
        raise InvalidTag()  # the one unwrap error
    nonce, sealed = wrapped[1:25], wrapped[25:]
    aad = wrap_aad(key_id, purpose, subject)
    return AESGCM(xaes_key(kek, nonce)).decrypt(nonce[12:], sealed, aad)


def email(s: str) -> str:
    out = unicodedata.normalize("NFC", s.strip()).lower()
    if "@" in out and out.endswith("."):
        out = out[:-1]
    return out


def transform(step: str, s: str) -> str:
    nfkc = lambda x: unicodedata.normalize("NFKC", x)
    simple = {
        "trim": lambda x: x.strip(),
        "collapse_spaces": lambda x: re.sub(r"\s+", " ", x),
        "lowercase": str.lower,
        "nfc": lambda x: unicodedata.normalize("NFC", x),
        "nfkc": nfkc,
        "casefold": lambda x: nfkc(nfkc(x).casefold()),
        "digits": lambda x: "".join(c for c in x if "0" <= c <= "9"),
        "email": email,
        "email_domain": lambda x: email(x).rpartition("@")[2] if "@" in email(x) else "",
    }
    if step in simple:
        return simple[step](s)
    m = re.fullmatch(r"(first|last)\((\d+)\)", step)
    if not m:
        raise ValueError(f"unknown transform {step}")
    n = int(m.group(2))
    return s[:n] if m.group(1) == "first" else s[-n:]


def blind_value(v) -> str:
    key = derive(bytes.fromhex(v["root key"]), "blind-index-key", [v["table"], v["index"]])
    assert key.hex() == v["index key"], v["name"]
    message = b""
    for i in range(1, int(v["parts"]) + 1):
        raw = bytes.fromhex(v[f"part {i} input"])
        if v[f"part {i} kind"] == "text":
            text = raw.decode()
            for step in filter(None, (t.strip() for t in v[f"part {i} transforms"].split(","))):
                text = transform(step, text)
            part = text.encode()
        else:
            part = raw
        assert part.hex() == v[f"part {i} normalized"], (v["name"], i)
        message += struct.pack(">I", len(part)) + part
    assert message.hex() == v["message"], v["name"]
    bits = int(v["bits"])
    nbytes = (bits + 7) // 8
    tag = bytearray(hmac.new(key, message, hashlib.sha256).digest()[:nbytes])
    tag[-1] &= (0xFF << (nbytes * 8 - bits)) & 0xFF
    return (bytes([int(v["key id"])]) + bytes(tag)).hex()


def blocks(kind: str):
    for body in re.findall(r"```" + kind + r"\n(.*?)```", SPEC.read_text(), re.S):
        fields = {}
        for line in body.strip("\n").split("\n"):
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        yield fields


def main() -> int:
    checked = 0
    for v in blocks("vector"):
        roots = {int(v["key id"]): bytes.fromhex(v["root key"])}
        env = bytes.fromhex(v["envelope"])
        plaintext = open_envelope(roots, v["table"], v["column"], env)
        assert plaintext == bytes.fromhex(v["plaintext"]), v["name"]
        # The same envelope must not open in another column or after a one-bit flip.
        for bad in (lambda: open_envelope(roots, v["table"], v["column"] + "_other", env),
                    lambda: open_envelope(roots, v["table"], v["column"], env[:-1] + bytes([env[-1] ^ 1]))):
            try:
                bad()
                raise AssertionError(f"{v['name']}: tampered envelope opened")
            except InvalidTag:
                pass
        checked += 1
    for v in blocks("blind-index-key"):
        key = derive(bytes.fromhex(v["root key"]), "blind-index-key", [v["table"], v["index"]])
        assert key.hex() == v["index key"], v["name"]
        checked += 1
    for v in blocks("tenant-blind-index-key"):
        tenant_root = derive(bytes.fromhex(v["root key"]), "tenant-blind-index-key", [v["tenant"]])
        assert tenant_root.hex() == v["tenant root key"], v["name"]
        key = derive(tenant_root, "blind-index-key", [v["table"], v["index"]])
        assert key.hex() == v["index key"], v["name"]
        checked += 1
    for v in blocks("blind-index"):
        assert blind_value(v) == v["value"], v["name"]
        checked += 1
    wrapped_vectors = 0
    for v in blocks("wrapped-key"):
        kek, key_id = bytes.fromhex(v["kek"]), int(v["key id"])
        purpose, subject = v["purpose"], v["subject"]
        wrapped = bytes.fromhex(v["wrapped"])
        assert wrap_aad(key_id, purpose, subject).hex() == v["aad"], v["name"]
        assert wrapped[1:25].hex() == v["nonce"], v["name"]
        key = static_unwrap(kek, key_id, purpose, subject, wrapped)
        assert key == bytes.fromhex(v["key"]), v["name"]
        # Another key id, purpose or subject, a flipped bit or a truncation must not unwrap.
        for bad in (lambda: static_unwrap(kek, key_id + 1, purpose, subject, wrapped),
                    lambda: static_unwrap(kek, key_id, purpose + "-other", subject, wrapped),
                    lambda: static_unwrap(kek, key_id, purpose, subject + "x", wrapped),
                    lambda: static_unwrap(kek, key_id, purpose, subject,
                                          wrapped[:40] + bytes([wrapped[40] ^ 1]) + wrapped[41:]),
                    lambda: static_unwrap(kek, key_id, purpose, subject, wrapped[:-1])):
            try:
                bad()
                raise AssertionError(f"{v['name']}: tampered wrapped key unwrapped")
            except InvalidTag:
                pass
        wrapped_vectors += 1
        checked += 1
    kcv_vectors = 0
    for v in blocks("key-check-value"):
        names = [v["purpose"], str(int(v["key id"]))]
        info = b"key-check-value\x00" + b"".join(lp(n) for n in names)
        assert info.hex() == v["info"], v["name"]
        kcv = derive(bytes.fromhex(v["root key"]), "key-check-value", names)[:16]
        assert kcv.hex() == v["check value"], v["name"]
        kcv_vectors += 1
        checked += 1
    if kcv_vectors < 3:
        print(f"only {kcv_vectors} key-check-value vectors found in {SPEC}", file=sys.stderr)
        return 1
    if wrapped_vectors < 2:
        print(f"only {wrapped_vectors} wrapped-key vectors found in {SPEC}", file=sys.stderr)
        return 1
    if checked < 15:
        print(f"only {checked} vectors found in {SPEC}", file=sys.stderr)
        return 1
    print(f"{checked} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
