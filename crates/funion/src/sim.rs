//! `funion sim`: the deterministic simulator from the command line.

use clap::Args;
use funion_pki::{KemKind, Parameters};
use funion_sim::{erlang_quantile, ks_distance, run, summarize, SimConfig, SimReport};
use funion_sphinx::kem::{XWing, X25519};

/// Options of `funion sim`.
#[derive(Args)]
pub struct SimArgs {
    /// Clients.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Virtual seconds to simulate.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Millisecond delays instead of the paper's.
    #[arg(long)]
    fast: bool,
    /// Sphinx KEM: xwing or x25519.
    #[arg(long, default_value = "x25519")]
    kem: String,
    /// Sphinx payload bytes.
    #[arg(long, default_value_t = 2_000)]
    payload: u32,
    /// Seed of the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Mixes per layer.
    #[arg(long, default_value_t = 2)]
    mixes_per_layer: usize,
    /// Leave slots without a request empty (no cover loops).
    #[arg(long)]
    no_cover: bool,
}

/// Runs the simulation and prints the report.
pub fn run_sim(args: SimArgs) -> anyhow::Result<()> {
    let base = if args.fast {
        Parameters::fast()
    } else {
        Parameters::paper()
    };
    let kem = match args.kem.as_str() {
        "xwing" => KemKind::XWing,
        "x25519" => KemKind::X25519,
        other => anyhow::bail!("unknown KEM {other:?}: use xwing or x25519"),
    };
    let mut config = SimConfig::paper(args.clients, args.seconds);
    config.seed = args.seed;
    config.cover = !args.no_cover;
    config.mixes_per_layer = args.mixes_per_layer;
    config.parameters = Parameters {
        kem,
        payload_len: args.payload,
        ..base
    };
    config.parameters.geometry()?;
    let report = match kem {
        KemKind::XWing => run::<XWing>(&config),
        KemKind::X25519 => run::<X25519>(&config),
    };
    print_report(&config, &report);
    Ok(())
}

fn print_report(config: &SimConfig, report: &SimReport) {
    let mu = report.mean_delay_us / 1e6;
    let k = report.echo_hops;
    println!(
        "simulated {} clients for {} s (seed {}), μ = {} s, λ_s = {}/s, {} hops per echo, cover {}",
        config.clients,
        config.duration_us / 1_000_000,
        config.seed,
        mu,
        config.parameters.send_rate(),
        k,
        if config.cover { "on" } else { "off" }
    );
    let echo = summarize(&report.echo_rtts);
    println!(
        "echo RTT (s): n = {}  mean {:.4}  p50 {:.4}  p95 {:.4}  p99 {:.4}",
        echo.count, echo.mean, echo.p50, echo.p95, echo.p99
    );
    println!(
        "Erlang(k={k}, mean {:.3} s):  mean {:.4}  p50 {:.4}  p95 {:.4}  p99 {:.4}",
        k as f64 * mu,
        k as f64 * mu,
        erlang_quantile(k, mu, 0.5),
        erlang_quantile(k, mu, 0.95),
        erlang_quantile(k, mu, 0.99)
    );
    if echo.count > 0 {
        let off = (echo.mean - k as f64 * mu) / (k as f64 * mu) * 100.0;
        let ks = ks_distance(&report.echo_rtts, k, mu);
        println!("mean off the model by {off:+.2} %, Kolmogorov–Smirnov distance {ks:.4}");
    }
    if !report.loop_rtts.is_empty() {
        let loops = summarize(&report.loop_rtts);
        println!(
            "loop RTT (s): n = {}  mean {:.4}  p50 {:.4}  p95 {:.4}",
            loops.count, loops.mean, loops.p50, loops.p95
        );
    }
    println!("retransmissions {}", report.retransmissions);
    if report.dropped.is_empty() {
        println!("dropped: none");
    } else {
        for (reason, count) in &report.dropped {
            println!("dropped {reason}: {count}");
        }
    }
    println!("packets per link:");
    let mut links: Vec<_> = report.links.iter().collect();
    links.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let shown = links
        .iter()
        .filter(|((from, _), _)| !from.starts_with("client"))
        .take(40);
    for ((from, to), count) in shown {
        println!("  {from:>12} -> {to:<12} {count}");
    }
    let from_clients: u64 = links
        .iter()
        .filter(|((from, _), _)| from.starts_with("client"))
        .map(|(_, n)| **n)
        .sum();
    println!("  {:>12} -> gateways     {from_clients}", "clients");
}
