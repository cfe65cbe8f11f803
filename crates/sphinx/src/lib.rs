//! placeholder
pub mod hctr2;
pub mod kem;

/// Why a Sphinx operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A public key that does not decode or fails its check.
    #[error("malformed KEM public key")]
    BadPublicKey,
    /// A KEM ciphertext that does not decapsulate.
    #[error("KEM decapsulation failed")]
    Decapsulation,
}
