//! Key files (format-spec/keyfile.md): `keys/<id>`, not sealed as a whole; the master key
//! inside is sealed under a key derived from the password with Argon2id.

use super::{Kind, Timestamp, decode, encode, strip_header};
use crate::crypto::{Encryption, KdfParams, MasterKey, Sealer};
use crate::error::{Error, Result};

/// Associated data of the master-key seal.
const MASTER_AD: &[u8] = b"CRNK\x01master";

#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct KeyFile {
    /// 0 = none (integrity only, `master` holds the bare key), 1 = repokey.
    pub encryption: u8,
    pub kdf_m_cost_kib: u32,
    pub kdf_t_cost: u32,
    pub kdf_p_cost: u32,
    pub salt: [u8; 32],
    pub created: Timestamp,
    pub host: String,
    pub username: String,
    /// The master key: sealed (repokey), or the 32 bytes themselves (none).
    pub master: Vec<u8>,
}

impl KeyFile {
    pub fn encryption(&self) -> Result<Encryption> {
        match self.encryption {
            0 => Ok(Encryption::None),
            1 => Ok(Encryption::Repokey),
            n => Err(Error::corrupt(
                "key file",
                format!("unknown encryption {n}"),
            )),
        }
    }

    pub fn kdf(&self) -> KdfParams {
        KdfParams {
            m_cost_kib: self.kdf_m_cost_kib,
            t_cost: self.kdf_t_cost,
            p_cost: self.kdf_p_cost,
        }
    }

    /// A new key file protecting `master`. `password` is ignored for `Encryption::None`.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        master: &MasterKey,
        encryption: Encryption,
        password: &[u8],
        kdf: KdfParams,
        salt: [u8; 32],
        created: Timestamp,
        host: String,
        username: String,
    ) -> Result<KeyFile> {
        let sealed = match encryption {
            Encryption::Repokey => {
                let kek = kdf.derive(password, &salt).map_err(Error::Other)?;
                Sealer::encrypting(&kek).seal(MASTER_AD, master.as_bytes())
            }
            Encryption::None => master.as_bytes().to_vec(),
        };
        Ok(KeyFile {
            encryption: match encryption {
                Encryption::None => 0,
                Encryption::Repokey => 1,
            },
            kdf_m_cost_kib: kdf.m_cost_kib,
            kdf_t_cost: kdf.t_cost,
            kdf_p_cost: kdf.p_cost,
            salt,
            created,
            host,
            username,
            master: sealed,
        })
    }

    /// Recover the master key. `Err(WrongPassword)` if the password does not open it.
    pub fn unlock(&self, password: &[u8]) -> Result<MasterKey> {
        match self.encryption()? {
            Encryption::None => {
                let b: [u8; 32] = self
                    .master
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::corrupt("key file", "bad master key length"))?;
                Ok(MasterKey::from_bytes(b))
            }
            Encryption::Repokey => {
                let kdf = self.kdf();
                kdf.validate().map_err(|e| Error::corrupt("key file", e))?;
                let kek = kdf.derive(password, &self.salt).map_err(Error::Other)?;
                let mut plain = Sealer::encrypting(&kek)
                    .open(MASTER_AD, &self.master)
                    .map_err(|_| Error::WrongPassword)?;
                let b: Result<[u8; 32]> = plain
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::corrupt("key file", "bad master key length"));
                zeroize::Zeroize::zeroize(&mut plain);
                Ok(MasterKey::from_bytes(b?))
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Kind::Key.header().to_vec();
        out.extend_from_slice(&encode(self));
        out
    }

    pub fn decode(data: &[u8], object: &str) -> Result<KeyFile> {
        let body = strip_header(Kind::Key, data, object)?;
        let k: KeyFile = decode(body, object)?;
        k.encryption()?;
        Ok(k)
    }
}
