"""Keys and signatures: EC keys and X.509 chains (keys), batched ECDSA verification (ecdsa),
Sigstore keyless verification (keyless), and the trust a bundle is checked with (trust)."""
