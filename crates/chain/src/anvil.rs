//! A local Ethereum node: anvil, from the npm package `@foundry-rs/anvil`
//! (`scripts/setup-chain` installs it under `contracts/node_modules`). It
//! mines a block for every transaction and an empty one every second, so
//! confirmations keep coming on an idle chain.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where anvil is: `$FUNION_ANVIL`, else the npm package's binary in this
/// checkout, else `anvil` on the PATH.
pub fn anvil_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FUNION_ANVIL") {
        return PathBuf::from(path);
    }
    let checkout = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if checkout.exists() {
        return checkout;
    }
    PathBuf::from("anvil")
}

/// A running anvil; stopped when dropped.
pub struct Anvil {
    child: Child,
    /// Its JSON-RPC URL.
    pub rpc_url: String,
}

impl Anvil {
    /// Starts anvil on a free loopback port with `block_time_s` between
    /// empty blocks, keeping its state in `state` if given (so a devnet's
    /// chain outlives a restart).
    pub async fn start(block_time_s: u64, state: Option<PathBuf>) -> anyhow::Result<Self> {
        let binary = anvil_binary();
        let mut command = Command::new(&binary);
        command
            .args(["--host", "127.0.0.1", "--port", "0", "--mixed-mining"])
            .args(["--block-time", &block_time_s.max(1).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(state) = state {
            command.arg("--state").arg(state);
        }
        let mut child = command.spawn().map_err(|e| {
            anyhow::anyhow!(
                "cannot start anvil ({}): {e}; run scripts/setup-chain",
                binary.display()
            )
        })?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let rpc_url = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(address) = line.strip_prefix("Listening on ") {
                    return Ok(format!("http://{}", address.trim()));
                }
            }
            anyhow::bail!("anvil exited before it listened")
        })
        .await
        .map_err(|_| anyhow::anyhow!("anvil did not listen within 60 s"))??;
        // Keep reading its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Anvil { child, rpc_url })
    }

    /// Stops it now.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
