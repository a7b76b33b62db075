//! Keys, sealing and ids (format-spec/crypto.md).
//!
//! Owns: the master key and the subkeys derived from it, the password KDF (Argon2id), sealing
//! and opening of byte strings (XChaCha20-Poly1305 with a random nonce, or a keyed BLAKE3 MAC in
//! integrity-only repositories), keyed blob ids, and the chunker's gear table. Pure: no I/O.
//! Must never: log or format key material, reuse a nonce, or accept a seal that fails to verify.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, Zeroizing};

use crate::id::Id;

/// Length of a random nonce in an encrypted seal.
pub const NONCE_LEN: usize = 24;
/// Length of the authentication tag (Poly1305) or MAC (integrity-only mode).
pub const TAG_LEN: usize = 16;
/// Bytes a seal adds to its plaintext in an encrypted repository.
pub const SEAL_OVERHEAD_ENCRYPTED: usize = NONCE_LEN + TAG_LEN;
/// Bytes a seal adds to its plaintext in an integrity-only repository.
pub const SEAL_OVERHEAD_NONE: usize = TAG_LEN;

/// Domain-separation contexts for `blake3::derive_key` (format-spec/crypto.md §2).
const CTX_ENC: &str = "cairn 2026-11 v1 encryption key";
const CTX_ID: &str = "cairn 2026-11 v1 blob id key";
const CTX_MAC: &str = "cairn 2026-11 v1 integrity mac key";
const CTX_CHUNKER: &str = "cairn 2026-11 v1 chunker gear key";

/// How a repository protects its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// XChaCha20-Poly1305; the master key is sealed by a password (`repokey`).
    Repokey,
    /// Integrity only: contents are readable by anyone, every object carries a keyed MAC.
    None,
}

impl Encryption {
    pub fn as_str(self) -> &'static str {
        match self {
            Encryption::Repokey => "repokey",
            Encryption::None => "none",
        }
    }

    pub fn seal_overhead(self) -> usize {
        match self {
            Encryption::Repokey => SEAL_OVERHEAD_ENCRYPTED,
            Encryption::None => SEAL_OVERHEAD_NONE,
        }
    }
}

/// Seal verification failed: wrong key, or the bytes were modified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed (wrong key or damaged data)")]
pub struct OpenError;

/// 256 random bits from the operating system.
pub fn random_32() -> [u8; 32] {
    let mut b = [0u8; 32];
    fill_random(&mut b);
    b
}

/// A fresh random nonce from the thread-local CSPRNG (ChaCha12, seeded and periodically
/// reseeded from the operating system). A system call per nonce cost 100k system calls per
/// 100k blobs; 192-bit random nonces need unpredictability and uniqueness, which this gives.
fn random_nonce() -> [u8; NONCE_LEN] {
    use rand::Rng;
    let mut n = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut n);
    n
}

/// Fill `buf` from the operating system's CSPRNG. The OS RNG failing is unrecoverable: we
/// must never fall back to predictable nonces or keys.
pub fn fill_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        panic!("the operating system's random number generator failed: {e}");
    }
}

/// The repository's master key. Zeroized on drop; never printed.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn generate() -> Self {
        MasterKey(Zeroizing::new(random_32()))
    }
    pub fn from_bytes(b: [u8; 32]) -> Self {
        MasterKey(Zeroizing::new(b))
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Argon2id cost parameters, stored in each key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The default for new keys: 64 MiB, 3 passes, 1 lane (about a quarter second here).
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };

    /// Cheap parameters so test suites are fast. The binary only accepts them in debug builds
    /// with `CAIRN_INSECURE_TEST_KDF=1`; nothing selects them by default.
    #[doc(hidden)]
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    /// Upper bounds a key file may ask for, so a hostile key file cannot exhaust memory or time.
    pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
    pub const MAX_T_COST: u32 = 64;
    pub const MAX_P_COST: u32 = 16;

    pub fn validate(&self) -> Result<(), String> {
        if self.m_cost_kib > Self::MAX_M_COST_KIB
            || self.t_cost == 0
            || self.t_cost > Self::MAX_T_COST
            || self.p_cost == 0
            || self.p_cost > Self::MAX_P_COST
            || self.m_cost_kib < 8 * self.p_cost
        {
            return Err(format!(
                "Argon2id parameters out of range (m={} KiB, t={}, p={})",
                self.m_cost_kib, self.t_cost, self.p_cost
            ));
        }
        Ok(())
    }

    /// Derive the 32-byte key-encryption key from a password and salt.
    pub fn derive(&self, password: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, String> {
        self.validate()?;
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| format!("Argon2id parameters: {e}"))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password, salt, out.as_mut())
            .map_err(|e| format!("Argon2id: {e}"))?;
        Ok(out)
    }
}

/// Seal or open with one 32-byte key; used both for repository objects (subkey of the master
/// key) and for sealing the master key under a password-derived key.
pub struct Sealer {
    mode: Encryption,
    aead: Option<XChaCha20Poly1305>,
    mac_key: Zeroizing<[u8; 32]>,
}

impl Sealer {
    /// A sealer for encrypted objects under `key`.
    pub fn encrypting(key: &[u8; 32]) -> Self {
        Sealer {
            mode: Encryption::Repokey,
            aead: Some(XChaCha20Poly1305::new(&(*key).into())),
            mac_key: Zeroizing::new([0u8; 32]),
        }
    }

    /// A sealer that only authenticates, with a MAC under `key`.
    pub fn integrity_only(key: &[u8; 32]) -> Self {
        Sealer {
            mode: Encryption::None,
            aead: None,
            mac_key: Zeroizing::new(*key),
        }
    }

    pub fn mode(&self) -> Encryption {
        self.mode
    }

    fn mac(&self, ad: &[u8], data: &[u8]) -> [u8; TAG_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.mac_key);
        h.update(&(ad.len() as u64).to_le_bytes());
        h.update(ad);
        h.update(data);
        let full = h.finalize();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&full.as_bytes()[..TAG_LEN]);
        out
    }

    /// Append the seal of `plaintext` (bound to `ad`) to `out`.
    pub fn seal_into(&self, ad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce = if self.aead.is_some() {
            random_nonce()
        } else {
            [0u8; NONCE_LEN]
        };
        self.seal_with(ad, plaintext, nonce, out)
    }

    /// Bytes a caller must reserve in front of the plaintext for [`Sealer::seal_in_place`].
    pub fn headroom(&self) -> usize {
        if self.aead.is_some() { NONCE_LEN } else { 0 }
    }

    /// Seal in place: `buf` holds [`Sealer::headroom`] bytes of any value followed by the
    /// plaintext; afterwards it holds the seal (same layout as [`Sealer::seal`]).
    pub fn seal_in_place(&self, ad: &[u8], buf: &mut Vec<u8>) {
        match &self.aead {
            Some(aead) => {
                let nonce = random_nonce();
                buf[..NONCE_LEN].copy_from_slice(&nonce);
                let tag = aead
                    .encrypt_inout_detached(
                        &XNonce::from(nonce),
                        ad,
                        (&mut buf[NONCE_LEN..]).into(),
                    )
                    .expect("XChaCha20-Poly1305 message length limit");
                buf.extend_from_slice(&tag);
            }
            None => {
                let mac = self.mac(ad, buf);
                buf.extend_from_slice(&mac);
            }
        }
    }

    /// Seal with a caller-chosen nonce. Only for reproducible test vectors: reusing a nonce
    /// under one key destroys confidentiality.
    #[cfg(any(test, feature = "testing"))]
    pub fn seal_into_with_nonce(
        &self,
        ad: &[u8],
        plaintext: &[u8],
        nonce: [u8; NONCE_LEN],
        out: &mut Vec<u8>,
    ) {
        self.seal_with(ad, plaintext, nonce, out)
    }

    /// Seal under `nonce` (the caller guarantees it is fresh, or is a test vector).
    pub(crate) fn seal_with(
        &self,
        ad: &[u8],
        plaintext: &[u8],
        nonce: [u8; NONCE_LEN],
        out: &mut Vec<u8>,
    ) {
        match &self.aead {
            Some(aead) => {
                out.reserve(plaintext.len() + SEAL_OVERHEAD_ENCRYPTED);
                out.extend_from_slice(&nonce);
                let start = out.len();
                out.extend_from_slice(plaintext);
                let tag = aead
                    .encrypt_inout_detached(&XNonce::from(nonce), ad, (&mut out[start..]).into())
                    // Only fails for messages beyond 2^38 bytes, far above any object we seal.
                    .expect("XChaCha20-Poly1305 message length limit");
                out.extend_from_slice(&tag);
            }
            None => {
                out.reserve(plaintext.len() + SEAL_OVERHEAD_NONE);
                out.extend_from_slice(plaintext);
                let mac = self.mac(ad, plaintext);
                out.extend_from_slice(&mac);
            }
        }
    }

    pub fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_into(ad, plaintext, &mut out);
        out
    }

    /// Verify and open a seal made by [`Sealer::seal`] with the same key and `ad`.
    pub fn open(&self, ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut buf = Vec::new();
        self.open_into(ad, sealed, &mut buf)?;
        Ok(buf)
    }

    /// [`Sealer::open`] into a caller's buffer (cleared first), so a loop over many objects can
    /// reuse one allocation.
    pub fn open_into(&self, ad: &[u8], sealed: &[u8], buf: &mut Vec<u8>) -> Result<(), OpenError> {
        buf.clear();
        match &self.aead {
            Some(aead) => {
                if sealed.len() < SEAL_OVERHEAD_ENCRYPTED {
                    return Err(OpenError);
                }
                let (nonce, rest) = sealed.split_at(NONCE_LEN);
                let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
                buf.extend_from_slice(ct);
                let nonce = XNonce::try_from(nonce).map_err(|_| OpenError)?;
                let tag = chacha20poly1305::Tag::try_from(tag).map_err(|_| OpenError)?;
                match aead.decrypt_inout_detached(&nonce, ad, buf.as_mut_slice().into(), &tag) {
                    Ok(()) => Ok(()),
                    Err(_) => {
                        buf.zeroize();
                        buf.clear();
                        Err(OpenError)
                    }
                }
            }
            None => {
                if sealed.len() < SEAL_OVERHEAD_NONE {
                    return Err(OpenError);
                }
                let (data, mac) = sealed.split_at(sealed.len() - TAG_LEN);
                let want = self.mac(ad, data);
                if constant_time_eq(&want, mac) {
                    buf.extend_from_slice(data);
                    Ok(())
                } else {
                    Err(OpenError)
                }
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Everything derived from the master key that the repository needs.
pub struct Keys {
    sealer: Sealer,
    id_key: Zeroizing<[u8; 32]>,
    chunker_key: Zeroizing<[u8; 32]>,
}

impl Keys {
    pub fn derive(master: &MasterKey, mode: Encryption) -> Keys {
        let sub = |ctx: &str| Zeroizing::new(blake3::derive_key(ctx, master.as_bytes()));
        let sealer = match mode {
            Encryption::Repokey => Sealer::encrypting(&sub(CTX_ENC)),
            Encryption::None => Sealer::integrity_only(&sub(CTX_MAC)),
        };
        Keys {
            sealer,
            id_key: sub(CTX_ID),
            chunker_key: sub(CTX_CHUNKER),
        }
    }

    pub fn mode(&self) -> Encryption {
        self.sealer.mode()
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The id of a blob: keyed BLAKE3 of its plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// A keyed hasher for computing a blob id incrementally.
    pub fn blob_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.id_key)
    }

    /// The chunker's 256-entry gear table: the first 2048 bytes of BLAKE3's extendable output
    /// keyed with the chunker key, read as little-endian u64s.
    pub fn gear_table(&self) -> [u64; 256] {
        let mut bytes = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(&self.chunker_key)
            .update(b"gear")
            .finalize_xof()
            .fill(&mut bytes);
        let mut table = [0u64; 256];
        for (i, v) in table.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            *v = u64::from_le_bytes(b);
        }
        bytes.zeroize();
        table
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({})", self.mode().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_tamper_detection() {
        for mode in [Encryption::Repokey, Encryption::None] {
            let keys = Keys::derive(&MasterKey::from_bytes([7; 32]), mode);
            let sealed = keys.sealer().seal(b"ad", b"hello world");
            assert_eq!(sealed.len(), 11 + mode.seal_overhead());
            assert_eq!(keys.sealer().open(b"ad", &sealed).unwrap(), b"hello world");
            assert!(keys.sealer().open(b"other ad", &sealed).is_err());
            for i in 0..sealed.len() {
                let mut bad = sealed.clone();
                bad[i] ^= 0x01;
                assert!(
                    keys.sealer().open(b"ad", &bad).is_err(),
                    "{mode:?} byte {i}"
                );
            }
            assert!(keys.sealer().open(b"ad", &sealed[..5]).is_err());
        }
    }

    #[test]
    fn seal_in_place_matches_seal() {
        for mode in [Encryption::Repokey, Encryption::None] {
            let keys = Keys::derive(&MasterKey::from_bytes([9; 32]), mode);
            let s = keys.sealer();
            let mut buf = vec![0u8; s.headroom()];
            buf.extend_from_slice(b"in place");
            s.seal_in_place(b"ad", &mut buf);
            assert_eq!(buf.len(), 8 + mode.seal_overhead());
            assert_eq!(s.open(b"ad", &buf).unwrap(), b"in place");
        }
    }

    #[test]
    fn encrypted_seal_hides_plaintext_and_uses_fresh_nonces() {
        let keys = Keys::derive(&MasterKey::generate(), Encryption::Repokey);
        let a = keys.sealer().seal(b"", b"secret secret secret");
        let b = keys.sealer().seal(b"", b"secret secret secret");
        assert_ne!(a, b);
        assert!(!a.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn ids_and_gear_depend_on_the_key() {
        let k1 = Keys::derive(&MasterKey::from_bytes([1; 32]), Encryption::Repokey);
        let k2 = Keys::derive(&MasterKey::from_bytes([2; 32]), Encryption::Repokey);
        assert_ne!(k1.blob_id(b"x"), k2.blob_id(b"x"));
        assert_eq!(k1.blob_id(b"x"), k1.blob_id(b"x"));
        assert_ne!(k1.gear_table(), k2.gear_table());
        let mut h = k1.blob_hasher();
        h.update(b"x");
        assert_eq!(Id(*h.finalize().as_bytes()), k1.blob_id(b"x"));
    }

    #[test]
    fn kdf_rejects_hostile_parameters() {
        let p = KdfParams {
            m_cost_kib: u32::MAX,
            t_cost: 1,
            p_cost: 1,
        };
        assert!(p.derive(b"pw", b"saltsalt").is_err());
        let ok = KdfParams::INSECURE_FOR_TESTS
            .derive(b"pw", b"saltsalt")
            .unwrap();
        let ok2 = KdfParams::INSECURE_FOR_TESTS
            .derive(b"pw", b"saltsalt")
            .unwrap();
        let other = KdfParams::INSECURE_FOR_TESTS
            .derive(b"pw2", b"saltsalt")
            .unwrap();
        assert_eq!(*ok, *ok2);
        assert_ne!(*ok, *other);
    }
}
