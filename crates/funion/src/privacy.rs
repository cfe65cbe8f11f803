//! `funion sim privacy`: the anonymity experiments on the simulator, one
//! table of what each adversary achieved beside its controls.

use clap::Args;
use funion_compute::JobPath;
use funion_sim::clustering::clustering_rows;
use funion_sim::jobs::{run_jobs, JobsConfig};
use funion_sim::privacy::{
    compute_time_rows, online_rows, passive_rows, population_config, Plan, Row,
};
use funion_sphinx::kem::XWing;

/// Options of `funion sim privacy`.
#[derive(Args)]
pub struct PrivacyArgs {
    /// The CI-sized run of the same code (100 clients, two seeds, two
    /// virtual minutes).
    #[arg(long)]
    quick: bool,
    /// Populations to measure, comma-separated (default: 100,1000,10000,
    /// or 100 with --quick).
    #[arg(long, value_delimiter = ',')]
    populations: Option<Vec<usize>>,
    /// Virtual seconds measured after the burn-in.
    #[arg(long)]
    seconds: Option<u64>,
    /// Seeds (one run per population and setting each).
    #[arg(long)]
    seeds: Option<u64>,
    /// Skips the sweep over μ (run it once, at the smallest population).
    #[arg(long)]
    no_sweep: bool,
    /// Writes the rows as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// Writes the figures as SVG into DIR (entropy against the population,
    /// advantage against μ·λ_s, AUC against the observation window).
    #[arg(long, value_name = "DIR")]
    plots: Option<std::path::PathBuf>,
    /// The path every job takes: serial (the table in docs/privacy.md),
    /// store or fast.
    #[arg(long, default_value = "serial", value_parser = parse_path)]
    path: JobPath,
}

fn parse_path(name: &str) -> Result<JobPath, String> {
    JobPath::parse(name).ok_or_else(|| format!("unknown path {name:?}: use fast, store or serial"))
}

/// Runs the experiments and prints the table.
pub fn run_privacy(args: PrivacyArgs) -> anyhow::Result<()> {
    let mut plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(populations) = args.populations {
        anyhow::ensure!(
            populations.iter().all(|&n| n >= 2),
            "every population needs at least two clients"
        );
        plan.populations = populations;
    }
    if let Some(seconds) = args.seconds {
        plan.seconds = seconds;
    }
    if let Some(seeds) = args.seeds {
        anyhow::ensure!(seeds >= 1, "--seeds must be at least 1");
        plan.seeds = (1..=seeds).collect();
    }
    if args.no_sweep {
        plan.sweep_mean_delays_us.clear();
    }
    let path = args.path;
    let simulate = |config: &JobsConfig| {
        let config = JobsConfig {
            path,
            ..config.clone()
        };
        run_jobs::<XWing>(&config)
    };
    let started = std::time::Instant::now();
    let progress = |line: &str| {
        eprintln!("[{:>6.1} s] {line}", started.elapsed().as_secs_f64());
    };
    let mut rows = passive_rows(&plan, simulate, progress);
    rows.extend(online_rows(&plan, &[60, 600, 3_600], simulate, progress));
    rows.extend(compute_time_rows(&plan, simulate, progress));
    for &people in &plan.populations {
        let couriers = population_config(people, 1, 1).services;
        rows.extend(clustering_rows(
            people,
            plan.billing_jobs,
            3_600,
            couriers,
            &plan.seeds,
        ));
        progress(&format!("billing clustering: {people} people"));
    }
    println!(
        "privacy at the paper's parameters (μ = 0.2 s, λ_s = 2.5/s, Δ = 0.2 s), {} path, {} s after a {} s burn-in, {} seeds; positive control μ = {} ms",
        path.name(),
        plan.seconds,
        plan.burn_in_s,
        plan.seeds.len(),
        plan.control_mean_delay_us as f64 / 1e3
    );
    print_table(&rows);
    if let Some(path) = &args.json {
        let json: Vec<serde_json::Value> = rows.iter().map(row_json).collect();
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    if let Some(dir) = &args.plots {
        for path in crate::plots::write_plots(&rows, dir)? {
            eprintln!("wrote {}", path.display());
        }
    }
    eprintln!("wall time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn figure(x: f64) -> String {
    if x.is_nan() {
        "—".into()
    } else {
        format!("{x:.3}")
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<28} {:<15} {:<36} {:>24} {:<22} {:>5} {:>8} {:>8}",
        "experiment",
        "adversary",
        "metric",
        "value [95 % interval]",
        "target",
        "meets",
        "control",
        "null"
    );
    for row in rows {
        let value = format!(
            "{} [{}, {}]",
            figure(row.value.value),
            figure(row.value.low),
            figure(row.value.high)
        );
        let meets = match row.meets {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<28} {:<15} {:<36} {:>24} {:<22} {:>5} {:>8} {:>8}",
            row.name,
            row.adversary,
            row.metric,
            value,
            row.target,
            meets,
            figure(row.control_value),
            figure(row.null_value)
        );
    }
}

fn row_json(row: &Row) -> serde_json::Value {
    let number = |x: f64| {
        if x.is_finite() {
            serde_json::json!(x)
        } else {
            serde_json::Value::Null
        }
    };
    serde_json::json!({
        "name": row.name,
        "adversary": row.adversary,
        "metric": row.metric,
        "value": number(row.value.value),
        "ci_low": number(row.value.low),
        "ci_high": number(row.value.high),
        "target": row.target,
        "meets": row.meets,
        "control_value": number(row.control_value),
        "null_value": number(row.null_value),
    })
}
