//! tus's checksum extension: `Upload-Checksum: ALGORITHM BASE64`, read, and a chunk's digest
//! checked against it as its bytes stream past.

use base64::Engine;
use sha2::Digest;

use crate::net::ApiError;

/// What `Tus-Checksum-Algorithm` announces.
pub(super) const ALGORITHMS: &str = "sha1,sha256";

/// `Upload-Checksum: ALGORITHM BASE64`.
pub(super) enum Checksum {
    Sha1(Vec<u8>),
    Sha256(Vec<u8>),
}

pub(super) enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub(super) fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }
}

impl Checksum {
    pub(super) fn parse(value: &str) -> Result<Self, ApiError> {
        let bad = |m: &str| ApiError::bad("invalid_request", format!("Upload-Checksum: {m}"));
        let (algorithm, digest) = value.split_once(' ').ok_or_else(|| bad("must be ALGORITHM BASE64"))?;
        let digest = base64::engine::general_purpose::STANDARD.decode(digest.trim()).map_err(|_| bad("the digest is not base64"))?;
        match algorithm {
            "sha1" => Ok(Self::Sha1(digest)),
            "sha256" => Ok(Self::Sha256(digest)),
            other => Err(bad(&format!("{other:?} is not one of {ALGORITHMS}"))),
        }
    }

    pub(super) fn hasher(&self) -> Hasher {
        match self {
            Self::Sha1(_) => Hasher::Sha1(sha1::Sha1::new()),
            Self::Sha256(_) => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    pub(super) fn matches(&self, hasher: Hasher) -> bool {
        match (self, hasher) {
            (Self::Sha1(want), Hasher::Sha1(h)) => h.finalize().as_slice() == want.as_slice(),
            (Self::Sha256(want), Hasher::Sha256(h)) => h.finalize().as_slice() == want.as_slice(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_read_and_checked() {
        let data = b"hello tus";
        let sha1 = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(data));
        let sum = Checksum::parse(&format!("sha1 {sha1}")).unwrap();
        let mut h = sum.hasher();
        h.update(data);
        assert!(sum.matches(h));
        let sum = Checksum::parse(&format!("sha256 {sha1}")).unwrap();
        let mut h = sum.hasher();
        h.update(data);
        assert!(!sum.matches(h), "a sha1 digest is no sha256");
        assert!(Checksum::parse("md5 AAAA").is_err());
        assert!(Checksum::parse("sha1 !!!").is_err());
        assert!(Checksum::parse("sha1").is_err());
    }
}
