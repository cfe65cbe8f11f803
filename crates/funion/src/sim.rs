//! `funion sim`: the deterministic simulator from the command line.

use clap::{Args, Subcommand};
use funion_compute::JobPath;
use funion_pki::{KemKind, Parameters};
use funion_sim::jobs::{run_jobs, ComputeModel, Fault, JobsConfig, LinkModel, Trace};
use funion_sim::{erlang_quantile, ks_distance, run, summarize, SimConfig, SimReport};
use funion_sphinx::kem::{XWing, X25519};

/// Options of `funion sim`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimArgs {
    /// Whole jobs instead of bare echoes.
    #[command(subcommand)]
    command: Option<SimCommand>,
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

/// What `funion sim` runs besides bare echoes.
#[derive(Subcommand)]
pub enum SimCommand {
    /// Whole jobs (upload, dispatch, fetch, compute, store, read) through
    /// storage couriers, replicas and compute couriers, under faults.
    Jobs(JobsArgs),
    /// Anonymity experiments: adversaries on the observation trace, scored
    /// against the ground truth, beside positive and negative controls.
    Privacy(crate::privacy::PrivacyArgs),
}

/// Options of `funion sim jobs`.
#[derive(Args)]
pub struct JobsArgs {
    /// Clients running jobs.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Virtual seconds to simulate.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seed of the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Faults: none, loss (1 % of packets), crash (a replica down and back,
    /// a mix down and back, compute slowed 3×), or all.
    #[arg(long, default_value = "none")]
    faults: String,
    /// The paper's parameters (μ = 0.2 s, λ_s = 2.5/s, Δ = 0.2 s, X-Wing,
    /// 30 kB payloads, Table 3's balanced job) instead of millisecond ones.
    #[arg(long)]
    paper_params: bool,
    /// Sphinx KEM: xwing or x25519 (default: xwing with --paper-params,
    /// x25519 otherwise).
    #[arg(long)]
    kem: Option<String>,
    /// Mean pause between one client's jobs, seconds.
    #[arg(long)]
    think: Option<f64>,
    /// Service nodes (each a storage courier and a compute courier).
    #[arg(long, default_value_t = 2)]
    services: usize,
    /// Gateways.
    #[arg(long, default_value_t = 1)]
    gateways: usize,
    /// Mixes in each layer.
    #[arg(long, default_value_t = 2)]
    mixes_per_layer: usize,
    /// Send slots per second of each compute courier's mix client (default:
    /// the network's λ_s, as in the runtime; a courier carries about half
    /// as many jobs a second).
    #[arg(long)]
    courier_rate: Option<f64>,
    /// Store path: read the output with plain reads that find it with this
    /// probability (a read that finds nothing is sent again), instead of
    /// the default read that waits for it at the replicas.
    #[arg(long)]
    read_quantile: Option<f64>,
    /// Jobs carry no tickets and every job is admitted (by default clients
    /// pay with RLN ticket values and compute couriers run the gate).
    #[arg(long)]
    no_tickets: bool,
    /// The first N clients double-spend their tickets (the gate's control).
    #[arg(long, default_value_t = 0)]
    double_spenders: usize,
    /// Modelled packets instead of Sphinx packets: the same routes, delays,
    /// frame sizes and trace, without the packet cryptography (storage
    /// envelopes and BACAP are still real).
    #[arg(long = "abstract")]
    abstract_packets: bool,
    /// The path every job takes: fast (input inside the dispatch, output
    /// through a held SURB), store (boxes, upload beside the dispatch) or
    /// serial (boxes, one step after the other: the flow before the fast
    /// path).
    #[arg(long, default_value = "fast")]
    path: String,
    /// Batches each compute courier runs at once (the paper's server
    /// batches continuously).
    #[arg(long, default_value_t = 64)]
    compute_workers: usize,
    /// Writes the figures as JSON to this file too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Writes what an observer of every link saw to DIR/observations.csv
    /// (time, from, to, bytes, kind) and the ground truth apart, to
    /// DIR/truth.csv (client, started, ended, completed).
    #[arg(long, value_name = "DIR")]
    trace: Option<std::path::PathBuf>,
}

/// Runs the simulation and prints the report.
pub fn run_sim(args: SimArgs) -> anyhow::Result<()> {
    match args.command {
        Some(SimCommand::Jobs(jobs)) => return run_jobs_sim(jobs),
        Some(SimCommand::Privacy(privacy)) => return crate::privacy::run_privacy(privacy),
        None => {}
    }
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

fn jobs_config(args: &JobsArgs) -> anyhow::Result<JobsConfig> {
    let mut config = JobsConfig::paper(args.clients, args.seconds);
    config.seed = args.seed;
    config.abstract_packets = args.abstract_packets;
    config.tickets = !args.no_tickets;
    config.double_spenders = args.double_spenders;
    anyhow::ensure!(
        (1..=64).contains(&args.services),
        "--services must be between 1 and 64"
    );
    config.services = args.services;
    anyhow::ensure!(
        (1..=64).contains(&args.gateways) && (1..=64).contains(&args.mixes_per_layer),
        "--gateways and --mixes-per-layer must be between 1 and 64"
    );
    config.gateways = args.gateways;
    config.mixes_per_layer = args.mixes_per_layer;
    config.path = JobPath::parse(&args.path).ok_or_else(|| {
        anyhow::anyhow!("unknown path {:?}: use fast, store or serial", args.path)
    })?;
    anyhow::ensure!(
        (1..=4096).contains(&args.compute_workers),
        "--compute-workers must be between 1 and 4096"
    );
    config.compute_workers = args.compute_workers;
    if let Some(rate) = args.courier_rate {
        anyhow::ensure!(
            rate > 0.0 && rate.is_finite(),
            "--courier-rate must be a positive number of slots a second"
        );
        config.courier_send_rate = Some(rate);
    }
    if let Some(q) = args.read_quantile {
        anyhow::ensure!(
            q > 0.0 && q < 1.0,
            "--read-quantile must lie strictly between 0 and 1"
        );
        config.read_quantile = Some(q);
    }
    if !args.paper_params {
        config.parameters = Parameters {
            kem: KemKind::X25519,
            ..Parameters::fast()
        };
        config.compute = ComputeModel {
            ttft_us: 2_000,
            itl_us: 50,
        };
        config.output_tokens = 100;
        config.think_us = 50_000;
        config.courier_hold_us = 30_000;
        config.links = LinkModel {
            latency_us: 500,
            jitter_us: 500,
            loss: 0.0,
        };
    }
    match args.kem.as_deref() {
        None => {}
        Some("xwing") => config.parameters.kem = KemKind::XWing,
        Some("x25519") => config.parameters.kem = KemKind::X25519,
        Some(other) => anyhow::bail!("unknown KEM {other:?}: use xwing or x25519"),
    }
    if let Some(think) = args.think {
        anyhow::ensure!(
            think >= 0.0 && think.is_finite(),
            "--think must be a number of seconds"
        );
        config.think_us = (think * 1e6) as u64;
    }
    let duration = config.duration_us;
    let at = |fraction: f64| (duration as f64 * fraction) as u64;
    let loss = |c: &mut JobsConfig| c.links.loss = 0.01;
    let crash = |c: &mut JobsConfig| {
        c.faults = vec![
            Fault::ReplicaDown {
                replica: 1,
                at_us: at(0.2),
                until_us: at(0.35),
            },
            Fault::NodeDown {
                node: 1,
                at_us: at(0.4),
                until_us: at(0.45),
            },
            Fault::SlowCompute {
                factor: 3.0,
                at_us: at(0.5),
                until_us: at(0.6),
            },
        ]
    };
    match args.faults.as_str() {
        "none" => {}
        "loss" => loss(&mut config),
        "crash" => crash(&mut config),
        "all" => {
            loss(&mut config);
            crash(&mut config);
        }
        other => anyhow::bail!("unknown fault preset {other:?}: use none, loss, crash or all"),
    }
    config.parameters.geometry()?;
    Ok(config)
}

fn quantiles(samples: &[u64]) -> (f64, u64, u64, u64) {
    if samples.is_empty() {
        return (0.0, 0, 0, 0);
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    let mean = sorted.iter().sum::<u64>() as f64 / sorted.len() as f64;
    (mean, at(0.5), at(0.95), *sorted.last().expect("not empty"))
}

fn write_trace(dir: &std::path::Path, trace: &Trace) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let name = |i: u32| trace.names.get(i as usize).map_or("?", String::as_str);
    let mut text = String::from("at_us,from,to,bytes,kind\n");
    for o in &trace.observations {
        let _ = writeln!(
            text,
            "{},{},{},{},{}",
            o.at_us,
            name(o.from),
            name(o.to),
            o.bytes,
            o.kind.label()
        );
    }
    let path = dir.join("observations.csv");
    std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut text = String::from("client,started_us,ended_us,completed\n");
    for t in &trace.truth {
        let ended = t.ended_us.map(|e| e.to_string()).unwrap_or_default();
        let _ = writeln!(
            text,
            "{},{},{ended},{}",
            name(t.client),
            t.started_us,
            t.completed
        );
    }
    let path = dir.join("truth.csv");
    std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}

fn run_jobs_sim(args: JobsArgs) -> anyhow::Result<()> {
    let mut config = jobs_config(&args)?;
    config.trace = args.trace.is_some();
    let started = std::time::Instant::now();
    let report = match config.parameters.kem {
        KemKind::XWing => run_jobs::<XWing>(&config),
        KemKind::X25519 => run_jobs::<X25519>(&config),
    };
    let wall = started.elapsed().as_secs_f64();
    let p = &config.parameters;
    println!(
        "simulated {} clients for {} s (seed {}, faults {}, {} path), μ = {} s, λ_s = {}/s, Δ = {} s, j = {}, {:?}",
        config.clients,
        config.duration_us / 1_000_000,
        config.seed,
        args.faults,
        config.path.name(),
        p.mean_delay_us as f64 / 1e6,
        p.send_rate(),
        p.bucket_spacing_us as f64 / 1e6,
        report.bucket,
        p.kem,
    );
    println!(
        "network: {} gateways, {} mixes per layer, {} service nodes, {} replicas; {} packets; compute couriers send {}/s",
        config.gateways,
        config.mixes_per_layer,
        config.services,
        config.replicas,
        if config.abstract_packets {
            "abstract (modelled)"
        } else {
            "Sphinx"
        },
        config.courier_send_rate.unwrap_or(p.send_rate()),
    );
    let failed: u64 = report.jobs_failed.values().sum();
    println!(
        "jobs: {} started, {} completed ({} OVERFLOW), {} failed, {} unfinished at the end",
        report.jobs_started,
        report.jobs_completed,
        report.jobs_overflowed,
        failed,
        report.jobs_unfinished
    );
    for (reason, count) in &report.jobs_failed {
        println!("  failed ({reason}): {count}");
    }
    let (mean, p50, p95, max) = quantiles(&report.echoes_per_job);
    println!("echoes per job (client's and compute courier's, polls included): mean {mean:.2}, p50 {p50}, p95 {p95}, max {max}; the paper counts 5");
    let (mean, p50, p95, max) = quantiles(&report.client_echoes_per_job);
    println!("  of them the client's own: mean {mean:.2}, p50 {p50}, p95 {p95}, max {max}; the paper counts 3");
    println!(
        "outputs through a held SURB (one trip home, no echo): {} of {} completed; inputs read again (upload not landed yet): {}",
        report.held_replies, report.jobs_completed, report.refetches
    );
    let (mean, p50, p95, _) = quantiles(&report.latency_minus_compute_us);
    let paper = 5.0 * p.mean_delay_us as f64 * (2.0 * f64::from(p.hops) - 1.0) / 1e6;
    let paper_3 = paper * 3.0 / 5.0;
    println!(
        "latency minus compute ({:.3} s): mean {:.3} s, p50 {:.3} s, p95 {:.3} s; the paper's model (5 echoes × {} hops × μ) {:.3} s, its 3-echo variant {:.3} s",
        report.compute_us as f64 / 1e6,
        mean / 1e6,
        p50 as f64 / 1e6,
        p95 as f64 / 1e6,
        2 * p.hops - 1,
        paper,
        paper_3
    );
    println!(
        "writes acknowledged {}, lost {}",
        report.writes_acknowledged, report.writes_lost
    );
    if config.tickets {
        let refused: Vec<String> = report
            .jobs_refused_unpaid
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        println!(
            "tickets: {} accepted; jobs refused by the gate: {}; deposits whose secret a double spend gave away: {} of {} double spenders'",
            report.tickets_accepted,
            if refused.is_empty() { "none".to_string() } else { refused.join(", ") },
            report.deposits_slashed,
            config.double_spenders,
        );
    } else {
        println!("tickets: off (every job admitted)");
    }
    println!("packets and messages per link class:");
    for (link, count) in &report.links {
        println!("  {link:<18} {count}");
    }
    if !report.dropped.is_empty() {
        println!("dropped:");
        for (reason, count) in &report.dropped {
            println!("  {reason:<18} {count}");
        }
    }
    // Wall time goes to stderr: stdout is the same, byte for byte, for a seed.
    eprintln!(
        "{} events in {wall:.1} s of wall time ({:.0} events/s)",
        report.events,
        report.events as f64 / wall.max(1e-9)
    );
    if let (Some(dir), Some(trace)) = (&args.trace, &report.trace) {
        write_trace(dir, trace)?;
    }
    if let Some(path) = &args.json {
        let summary = |samples: &[u64], scale: f64| {
            let (mean, p50, p95, max) = quantiles(samples);
            serde_json::json!({
                "mean": mean / scale, "p50": p50 as f64 / scale,
                "p95": p95 as f64 / scale, "max": max as f64 / scale,
            })
        };
        let json = serde_json::json!({
            "clients": config.clients,
            "seconds": config.duration_us / 1_000_000,
            "seed": config.seed,
            "faults": args.faults,
            "path": config.path.name(),
            "bucket": report.bucket,
            "compute_s": report.compute_us as f64 / 1e6,
            "jobs_started": report.jobs_started,
            "jobs_completed": report.jobs_completed,
            "jobs_overflowed": report.jobs_overflowed,
            "jobs_unfinished": report.jobs_unfinished,
            "jobs_failed": report.jobs_failed,
            "echoes_per_job": summary(&report.echoes_per_job, 1.0),
            "client_echoes_per_job": summary(&report.client_echoes_per_job, 1.0),
            "latency_minus_compute_s": summary(&report.latency_minus_compute_us, 1e6),
            "paper_latency_minus_compute_s": paper,
            "paper_3echo_latency_minus_compute_s": paper_3,
            "held_replies": report.held_replies,
            "refetches": report.refetches,
            "writes_acknowledged": report.writes_acknowledged,
            "writes_lost": report.writes_lost,
            "tickets": config.tickets,
            "tickets_accepted": report.tickets_accepted,
            "jobs_refused_unpaid": report.jobs_refused_unpaid,
            "deposits_slashed": report.deposits_slashed,
            "links": report.links,
            "dropped": report.dropped,
            "events": report.events,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    Ok(())
}
