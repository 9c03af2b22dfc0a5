#!/usr/bin/env python3
"""A new NATS account nkey for the dev and test NATS servers' auth callout.

Prints `SEED PUBLIC_KEY` (an account seed `SA...` and its public key `A...`), in the
encoding of NATS's nkeys: base32 (no padding) of prefix bytes, the 32-byte key and a
CRC-16/XMODEM. Ed25519 public key derivation from the seed follows RFC 8032 (section
5.1.5), written out here because the machines have no nkeys tool; it is slow pure Python,
fine for one key. `control-plane nats-setup` does the same in Rust for real deployments.
"""
import base64
import hashlib
import os
import sys

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P


def inv(x):
    return pow(x, P - 2, P)


def recover_x(y, sign):
    x2 = (y * y - 1) * inv(D * y * y + 1) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * pow(2, (P - 1) // 4, P) % P
    if x % 2 != sign:
        x = P - x
    return x


BY = 4 * inv(5) % P
BASE = (recover_x(BY, 0), BY, 1, recover_x(BY, 0) * BY % P)


def add(p, q):
    # Extended coordinates (RFC 8032, 5.1.4).
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * p[3] * q[3] * D % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def mul(s, p):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = add(q, p)
        p = add(p, p)
        s >>= 1
    return q


def public_key(seed):
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    x, y, z, _ = mul(a, BASE)
    zi = inv(z)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def crc16(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def encode(prefix_bytes, key):
    raw = bytes(prefix_bytes) + key
    raw += crc16(raw).to_bytes(2, "little")
    return base64.b32encode(raw).decode().rstrip("=")


SEED_PREFIX = 18 << 3  # 'S'
ACCOUNT_PREFIX = 0  # 'A'


def main():
    seed = bytes.fromhex(sys.argv[1]) if len(sys.argv) > 1 else os.urandom(32)
    seed_text = encode([SEED_PREFIX | (ACCOUNT_PREFIX >> 5), (ACCOUNT_PREFIX & 31) << 3], seed)
    print(seed_text, encode([ACCOUNT_PREFIX], public_key(seed)))


if __name__ == "__main__":
    main()
