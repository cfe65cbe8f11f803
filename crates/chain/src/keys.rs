//! Ethereum key files: one private key as 64 hex digits, readable by its
//! owner only (0600). A file anyone else can read is refused, as ssh
//! refuses such keys.

use std::io::Write;
use std::path::Path;

use alloy::primitives::B256;
use alloy::signers::local::PrivateKeySigner;
use rand_core::{OsRng, RngCore};

/// Reads the key at `path`, or makes a new one there (0600) if there is
/// none.
pub fn load_or_create(path: &Path) -> anyhow::Result<PrivateKeySigner> {
    if path.exists() {
        return load(path);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let signer = loop {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        // Zero or past the group order: draw again (never seen in practice).
        if let Ok(signer) = PrivateKeySigner::from_bytes(&B256::from(bytes)) {
            break signer;
        }
    };
    write_secret(path, &hex::encode(signer.to_bytes()))?;
    Ok(signer)
}

/// Writes `secret` and a newline to a new file only its owner can read
/// (0600), synced to disk; an existing file is never overwritten.
pub fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    writeln!(file, "{secret}")?;
    file.sync_all()?;
    Ok(())
}

/// Reads the key at `path`.
pub fn load(path: &Path) -> anyhow::Result<PrivateKeySigner> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{}: the key file is readable by others (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            );
        }
    }
    let text = std::fs::read_to_string(path)?;
    let bytes: [u8; 32] = hex::decode(text.trim().trim_start_matches("0x"))
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("{}: want 64 hex digits", path.display()))?;
    PrivateKeySigner::from_bytes(&B256::from(bytes))
        .map_err(|e| anyhow::anyhow!("{}: not a secp256k1 key: {e}", path.display()))
}
