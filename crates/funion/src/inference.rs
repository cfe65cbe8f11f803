//! `funion client ask / embed`, the models a devnet serves, and
//! `funion demo`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use funion_client::jobs::{run_jobs, JobReport, JobSpec, JobsReport};
use funion_compute::{class_for, JobPath, Outcome, Sampling, Task, OUTPUT_CLASSES};
use funion_compute_node::{journal_entry, ComputeRecord};
use funion_devnet::{self as devnet, DevnetOptions};
use funion_inference::chat::{ChatTemplate, Message};
use funion_inference::{minilm_dir, smollm2_gguf, tiny, TextTokenizer, MINILM, SMOLLM2};
use funion_net::config::{self, ClientFile, ComputeFile, ModelFile};
use funion_pki::Parameters;
use funion_sim::erlang_quantile;

/// The name the tiny seeded llama is served under.
pub const TINY_LLAMA: &str = "tiny-llama";

/// Options of one job, shared by `ask` and `embed`.
#[derive(Args, Clone)]
pub struct JobOptions {
    /// The client config (written by devnet or genconfig).
    #[arg(long)]
    config: PathBuf,
    /// Model name, as the compute couriers serve it.
    #[arg(long)]
    model: String,
    /// Folder with the model's tokenizer.json (prompts are tokenized here,
    /// only token IDs leave this machine).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Latency bucket index j: the answer is released j·Δ after the
    /// compute courier takes the job (OVERFLOW if the work takes longer).
    #[arg(long, default_value_t = 50)]
    bucket: u32,
    /// The wallet that pays (default: wallet.redb beside the config).
    #[arg(long)]
    wallet: Option<PathBuf>,
    /// The job's path: fast (input in the dispatch, output through a held
    /// SURB; jobs too large for one packet go the store way), store (boxes,
    /// upload beside the dispatch; the client may go away until the read)
    /// or serial (boxes, one step after another).
    #[arg(long, default_value = "fast", value_parser = parse_path)]
    path: JobPath,
}

fn parse_path(name: &str) -> Result<JobPath, String> {
    JobPath::parse(name).ok_or_else(|| format!("unknown path {name:?}: use fast, store or serial"))
}

/// `funion client ask`.
#[derive(Args)]
pub struct AskArgs {
    #[command(flatten)]
    job: JobOptions,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    max_tokens: u32,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long)]
    top_p: Option<f32>,
    /// Sampler seed (random if not given).
    #[arg(long)]
    seed: Option<u64>,
    /// The prompt.
    prompt: String,
}

/// `funion client embed`.
#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    job: JobOptions,
    /// The text to embed.
    text: String,
}

fn print_report(report: &JobsReport) {
    eprintln!(
        "{} echoes from this client ({} dispatch, the rest box operations; {} polls, {} resent)",
        report.stats.echoes, report.dispatch_echoes, report.stats.polls, report.stats.resends
    );
}

fn one(report: JobsReport) -> anyhow::Result<JobReport> {
    print_report(&report);
    report
        .jobs
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no job ran"))?
}

/// `funion client ask`: generates an answer to the prompt.
pub async fn ask(args: AskArgs) -> anyhow::Result<()> {
    let client: ClientFile = config::read(&args.job.config)?;
    let tokenizer = TextTokenizer::load(&args.job.tokenizer)?;
    let tokens = tokenizer.encode(&args.prompt)?;
    let output_class = class_for(&OUTPUT_CLASSES, args.max_tokens as usize)
        .ok_or_else(|| anyhow::anyhow!("--max-tokens is above the largest output class"))?;
    let spec = JobSpec {
        model: args.job.model,
        task: Task::Generate,
        tokens,
        output_class,
        sampling: Sampling {
            seed: args.seed.unwrap_or_else(rand_seed),
            temperature: args.temperature,
            top_p: args.top_p,
            max_tokens: args.max_tokens,
        },
        bucket: args.job.bucket,
        tickets: Vec::new(),
        courier: None,
        path: args.job.path,
    };
    let mut specs = vec![spec];
    crate::credits::pay_from_file(&args.job.config, args.job.wallet.as_deref(), &mut specs).await?;
    let job = one(run_jobs(&client, specs).await?)?;
    match job.outcome {
        Outcome::Tokens(ids) => println!("{}", tokenizer.decode(&ids)?),
        other => anyhow::bail!("{}", describe(&other)),
    }
    Ok(())
}

/// `funion client embed`: prints the embedding as JSON.
pub async fn embed(args: EmbedArgs) -> anyhow::Result<()> {
    let client: ClientFile = config::read(&args.job.config)?;
    let tokenizer = TextTokenizer::load(&args.job.tokenizer)?;
    let spec = JobSpec {
        model: args.job.model,
        task: Task::Embed,
        tokens: tokenizer.encode(&args.text)?,
        output_class: 512,
        sampling: Sampling::default(),
        bucket: args.job.bucket,
        tickets: Vec::new(),
        courier: None,
        path: args.job.path,
    };
    let mut specs = vec![spec];
    crate::credits::pay_from_file(&args.job.config, args.job.wallet.as_deref(), &mut specs).await?;
    let job = one(run_jobs(&client, specs).await?)?;
    match job.outcome {
        Outcome::Embedding(v) => println!("{}", serde_json::to_string(&v)?),
        other => anyhow::bail!("{}", describe(&other)),
    }
    Ok(())
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Overflow => {
            "OVERFLOW: the work overran the bucket; ask again with a larger --bucket".into()
        }
        Outcome::Failed(why) => format!("the compute courier could not run the job: {why}"),
        Outcome::Tokens(t) => format!("{} tokens", t.len()),
        Outcome::Embedding(v) => format!("an embedding of {} dimensions", v.len()),
    }
}

fn rand_seed() -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64()
}

/// The models a devnet's compute couriers serve: the tiny seeded llama
/// (written into `dir/models`), all-MiniLM-L6-v2 when its package is
/// installed, SmolLM2-135M-Instruct too when `chat` and its package is
/// installed, and `extra` (`name=path` for a folder or a GGUF file, or
/// `name=http://upstream`).
pub fn devnet_models(dir: &Path, extra: &[String], chat: bool) -> anyhow::Result<ComputeFile> {
    let tiny_dir = dir.join("models").join(TINY_LLAMA);
    tiny::write_tiny_llama(&tiny_dir, tiny::SEED, tiny::TinyShape::default())?;
    let mut models = vec![ModelFile::folder(TINY_LLAMA, tiny_dir)];
    match minilm_dir() {
        Ok(path) => models.push(ModelFile::folder(MINILM, path)),
        Err(error) => eprintln!("not serving {MINILM}: {error:#}"),
    }
    if chat {
        match smollm2_gguf() {
            Ok(path) => models.push(ModelFile::folder(SMOLLM2, path)),
            Err(error) => eprintln!("not serving {SMOLLM2}: {error:#}"),
        }
    }
    for spec in extra {
        models.push(model_spec(spec)?);
    }
    Ok(ComputeFile {
        models,
        ..ComputeFile::default()
    })
}

/// A model a compute courier serves, from `--model`: `NAME=FOLDER` (or a
/// GGUF file), `NAME=http://upstream`, or the bare name of a model whose
/// package is installed here (all-minilm-l6-v2, smollm2-135m-instruct).
pub fn model_spec(spec: &str) -> anyhow::Result<ModelFile> {
    let Some((name, place)) = spec.split_once('=') else {
        return match spec {
            MINILM => Ok(ModelFile::folder(MINILM, minilm_dir()?)),
            SMOLLM2 => Ok(ModelFile::folder(SMOLLM2, smollm2_gguf()?)),
            _ => {
                anyhow::bail!("--model {spec:?}: use NAME=FOLDER, NAME=URL, {MINILM} or {SMOLLM2}")
            }
        };
    };
    let mut model = ModelFile::folder(name, PathBuf::from(place));
    if place.starts_with("http://") || place.starts_with("https://") {
        model.path = None;
        model.upstream = Some(place.to_string());
    }
    Ok(model)
}

/// `funion demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// The prompt (embedded with all-MiniLM-L6-v2, answered by the tiny llama).
    prompt: Option<String>,
    /// The paper's delays (μ = 0.2 s, λ_s = 2.5/s, Δ = 0.2 s) instead of
    /// millisecond ones.
    #[arg(long)]
    paper_params: bool,
    /// Generate with this llama-family folder (Hugging Face layout) instead
    /// of SmolLM2-135M-Instruct.
    #[arg(long, conflicts_with = "gguf")]
    llama: Option<PathBuf>,
    /// Generate with this llama-family GGUF file instead of
    /// SmolLM2-135M-Instruct (its chat template, if it has one, frames the
    /// prompt).
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// Run each job twice, by the fast path and by the store path, and
    /// print both timelines (by default the fast path only).
    #[arg(long)]
    both: bool,
    /// After the demo, run N rounds of one embedding by each path (fast,
    /// store, serial, one after another) and print each path's end to end
    /// minus compute (mean, p50, p95) and echoes per job (every job then
    /// costs one ticket, so that the rounds fit one period's limit).
    #[arg(long, default_value_t = 0)]
    measure: usize,
}

/// `funion demo`: a whole network in this process, one anonymous embedding
/// with the real all-MiniLM-L6-v2 and one answer from a real chat model
/// (SmolLM2-135M-Instruct unless told otherwise), with their timelines.
pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let prompt = args
        .prompt
        .unwrap_or_else(|| "What does a mix network hide?".to_string());
    let mut parameters = if args.paper_params {
        Parameters::paper()
    } else {
        Parameters::fast()
    };
    if args.measure > 0 {
        // One ticket a job, so that the measured rounds fit one period's
        // limit of the deposit.
        parameters.credits.prices = funion_pki::Credits::flat_prices(1);
    }
    let dir = std::env::temp_dir().join(format!("funion-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let minilm = minilm_dir()?;
    let mut compute = devnet_models(&dir, &[], false)?;
    let (llama_name, llama_path) = match (&args.llama, &args.gguf) {
        (Some(folder), _) => ("llama", folder.clone()),
        (None, Some(file)) => ("gguf", file.clone()),
        (None, None) => (SMOLLM2, smollm2_gguf()?),
    };
    compute
        .models
        .push(ModelFile::folder(llama_name, llama_path.clone()));
    compute.batch_window_ms = (parameters.bucket_spacing_us / 1000).max(10);

    // Fit the network to this machine as it is now: what one loop of cover
    // costs here, and how long the models take, both measured under
    // whatever else the machine is running.
    let cost = funion_devnet::calibrate::measure(&parameters, Duration::from_millis(400)).await?;
    let fast_rate = parameters.send_rate();
    if !args.paper_params {
        let rate = cost
            .rate_within(DEMO_CLIENTS, COVER_SHARE)
            .clamp(MIN_DEMO_RATE, fast_rate);
        parameters.send_rate_millihertz = (rate * 1000.0) as u64;
    }
    let minilm_tokens = TextTokenizer::load(&minilm)?.encode(&prompt)?;
    let llama = TextTokenizer::for_model(&llama_path)?;
    let llama_tokens = llama.encode(&chat_prompt(&llama_path, &prompt)?)?;
    let models = funion_compute_node::load_models(&compute)?;
    let embed_s = time_model(
        &models,
        MINILM,
        Task::Embed,
        &minilm_tokens,
        512,
        Sampling::default(),
    )?;
    let ask_s = time_model(
        &models,
        llama_name,
        Task::Generate,
        &llama_tokens,
        256,
        ask_sampling(),
    )?;
    drop(models);
    let batch_window_ms = compute.batch_window_ms;
    let plan = BucketPlan::new(&parameters, &cost, embed_s.max(ask_s), batch_window_ms);
    println!(
        "funion demo: a whole network on loopback (authority, gateway, 3 mix layers, 2 service nodes \
         with couriers and compute couriers, 4 replicas); μ = {} ms, λ_s = {:.1}/s, Δ = {} ms",
        parameters.mean_delay_us / 1000,
        parameters.send_rate(),
        parameters.bucket_spacing_us / 1000
    );
    println!(
        "   measured here, now: a loop packet costs {:.2} ms of CPU (build {:.0} µs, {} hops × (unwrap {:.0} µs + Noise link {:.0} µs), × {:.1} for the runtime); {} core(s)",
        cost.per_loop_us() / 1e3,
        cost.build_us,
        cost.hops,
        cost.unwrap_us,
        cost.link_us,
        funion_devnet::calibrate::RUNTIME_OVERHEAD,
        cost.cores,
    );
    if args.paper_params {
        println!(
            "   the paper's λ_s: {DEMO_CLIENTS} clients' cover costs {:.3} cores",
            cost.cores_for(DEMO_CLIENTS, parameters.send_rate())
        );
    } else {
        println!(
            "   λ_s = {:.1}/s so that {DEMO_CLIENTS} clients' cover (this one and the two compute couriers) costs {:.2} of {} core(s), at most {:.0} %; at the --fast rate ({fast_rate}/s) it would cost {:.2}",
            parameters.send_rate(),
            cost.cores_for(DEMO_CLIENTS, parameters.send_rate()),
            cost.cores,
            COVER_SHARE * 100.0,
            cost.cores_for(DEMO_CLIENTS, fast_rate),
        );
    }
    println!(
        "   models measured here: {MINILM} {:.3} s, {llama_name} {:.3} s; bucket j = {} from the input in hand for the fast and store paths (batch wait ≤ {:.2} s, compute {:.2} s with a {COMPUTE_MARGIN}× margin), j = {} for the serial path (t_j = {:.2} s: also the fetch, ≤ {:.2} s)",
        embed_s,
        ask_s,
        plan.from_input,
        plan.batch_s,
        plan.compute_s,
        plan.bucket,
        plan.edge_s,
        plan.fetch_s,
    );
    let options = DevnetOptions {
        metrics: false,
        compute: Some(compute),
        ..DevnetOptions::default()
    };
    let started = std::time::Instant::now();
    let net = devnet::start_with(&dir, parameters.clone(), &options).await?;
    println!("network up in {:.1} s\n", started.elapsed().as_secs_f64());

    // Pay like any client: one deposit, then a ticket book proved ahead.
    let wallet = std::sync::Arc::new(funion_client::wallet::Wallet::open(
        &dir.join("wallet.redb"),
    )?);
    let credits = &parameters_with_ledger(&net, &parameters).credits;
    let ledger = funion_ledger::LedgerClient::new(&net.ledger_url)?;
    let registry = net.client_registry()?;
    let info = wallet
        .deposit_on_chain(
            &registry,
            &ledger,
            100,
            funion_chain::U256::from(devnet::DEVNET_MIN_POLICY_STAKE),
        )
        .await?;
    println!(
        "0. paid a deposit to the registry contract on anvil ({}): D = 100 × {} wei, S = {} wei; leaf {} of the depth-20 tree, {} tickets per period",
        registry.address(),
        devnet::DEVNET_STAKE_PER_TICKET,
        devnet::DEVNET_MIN_POLICY_STAKE,
        info.index,
        info.limit
    );
    let proving = std::time::Instant::now();
    let book = if args.both { 16 } else { 8 };
    crate::credits::prove_with_bar(wallet.clone(), credits, book, None).await?;
    println!(
        "   ticket book: {book} RLN proofs in {:.1} s, {} bytes each; none is proved on the request path\n",
        proving.elapsed().as_secs_f64(),
        funion_tickets::TICKET_LEN
    );

    let bucket = plan.bucket;
    let embed = JobSpec {
        model: MINILM.into(),
        task: Task::Embed,
        tokens: minilm_tokens,
        output_class: 512,
        sampling: Sampling::default(),
        bucket,
        tickets: Vec::new(),
        courier: None,
        path: JobPath::Fast,
    };
    println!("1. embedding {prompt:?} with {MINILM}");
    let describe_embedding = |o: &Outcome| match o {
        Outcome::Embedding(v) => format!(
            "{} dimensions, L2 norm {:.4}, first values {:.4?} …",
            v.len(),
            v.iter().map(|x| x * x).sum::<f32>().sqrt(),
            &v[..v.len().min(3)]
        ),
        other => describe(other),
    };
    let paths: &[JobPath] = if args.both {
        &[JobPath::Fast, JobPath::Store]
    } else {
        &[JobPath::Fast]
    };
    for &path in paths {
        let spec = JobSpec {
            path,
            bucket: plan.bucket_for(path),
            ..embed.clone()
        };
        demo_job(
            &net,
            credits,
            &wallet,
            spec,
            &parameters,
            describe_embedding,
        )
        .await?;
    }

    let ask = JobSpec {
        model: llama_name.into(),
        task: Task::Generate,
        tokens: llama_tokens,
        output_class: 256,
        sampling: ask_sampling(),
        bucket,
        tickets: Vec::new(),
        courier: None,
        path: JobPath::Fast,
    };
    println!("\n2. asking {llama_name} {prompt:?}");
    let describe_tokens = |o: &Outcome| match o {
        Outcome::Tokens(ids) => format!(
            "{:?} (token IDs {:?})",
            llama.decode(ids).unwrap_or_default(),
            ids
        ),
        other => describe(other),
    };
    for &path in paths {
        let spec = JobSpec {
            path,
            bucket: plan.bucket_for(path),
            ..ask.clone()
        };
        demo_job(&net, credits, &wallet, spec, &parameters, describe_tokens).await?;
    }
    if args.measure > 0 {
        // Buckets fitted to the embedding alone, as a client would choose.
        let embed_plan = BucketPlan::new(&parameters, &cost, embed_s, batch_window_ms);
        measure_paths(
            &net,
            credits,
            wallet.clone(),
            &embed,
            &embed_plan,
            &parameters,
            args.measure,
        )
        .await?;
    }
    let shed: u64 = net
        .nodes
        .iter()
        .map(|n| n.metrics.compute("loops_shed"))
        .sum();
    let overloaded: u64 = net
        .nodes
        .iter()
        .map(|n| {
            n.metrics
                .counters()
                .dropped
                .get(&funion_mixnet::DropReason::Overloaded)
                .copied()
                .unwrap_or(0)
        })
        .sum();
    println!(
        "\nload: the compute couriers shed {shed} cover loops while behind; nodes dropped {overloaded} packets as overloaded"
    );
    net.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The text a model at `path` is given for a user's `prompt`: the prompt in
/// the model's own chat template when its GGUF file carries one, else the
/// prompt as it is.
fn chat_prompt(path: &Path, prompt: &str) -> anyhow::Result<String> {
    if !funion_inference::is_gguf(path) {
        return Ok(prompt.to_string());
    }
    match ChatTemplate::from_gguf(path) {
        Ok(template) => template.render(
            &[Message {
                role: "user".into(),
                content: prompt.into(),
            }],
            true,
        ),
        Err(_) => Ok(prompt.to_string()),
    }
}

/// Pays for one demo job, runs it and shows its answer and timeline. A job
/// that overflows its bucket (the machine was slower now than when the
/// bucket was sized) is asked once more with j doubled and fresh tickets,
/// as a user told OVERFLOW would.
async fn demo_job(
    net: &devnet::Devnet,
    credits: &funion_pki::Credits,
    wallet: &funion_client::wallet::Wallet,
    mut spec: JobSpec,
    parameters: &Parameters,
    answer: impl Fn(&Outcome) -> String,
) -> anyhow::Result<()> {
    for attempt in 0..2 {
        let echoes_before = compute_echoes(net);
        let mut specs = vec![spec.clone()];
        crate::credits::pay_all(credits, wallet, &mut specs)?;
        println!("   paid with {} tickets", specs[0].tickets.len());
        println!(
            "   {} path, bucket j = {} (t_j = {:.2} s{})",
            spec.path.name(),
            spec.bucket,
            f64::from(spec.bucket) * parameters.bucket_spacing_us as f64 / 1e6,
            match spec.path {
                JobPath::Serial => " from the compute courier taking the job",
                JobPath::Fast | JobPath::Store => " from the input in hand",
            }
        );
        let report = run_jobs(&net.client, specs).await?;
        let courier_echoes = compute_echoes(net) - echoes_before;
        show(&report, courier_echoes, parameters, &answer)?;
        let overflowed =
            matches!(report.jobs.first(), Some(Ok(job)) if job.outcome == Outcome::Overflow);
        if !overflowed || attempt == 1 {
            break;
        }
        spec.bucket *= 2;
        println!(
            "   the work overran t_j on this machine as loaded now: asking again with j = {} (t_j = {:.2} s)",
            spec.bucket,
            f64::from(spec.bucket) * parameters.bucket_spacing_us as f64 / 1e6
        );
    }
    Ok(())
}

/// Runs `rounds` rounds of `template` by each path, one job at a time, and
/// prints each path's end to end minus the model's measured time and its
/// echoes per job (the client's and the compute couriers').
async fn measure_paths(
    net: &devnet::Devnet,
    credits: &funion_pki::Credits,
    wallet: std::sync::Arc<funion_client::wallet::Wallet>,
    template: &JobSpec,
    plan: &BucketPlan,
    parameters: &Parameters,
    rounds: usize,
) -> anyhow::Result<()> {
    const PATHS: [JobPath; 3] = [JobPath::Fast, JobPath::Store, JobPath::Serial];
    println!("\n3. {rounds} rounds of one embedding by each path, one job at a time");
    let price = funion_compute::client::input_class_of(template.tokens.len())
        .ok()
        .and_then(|class| credits.tickets_for(class, template.output_class))
        .unwrap_or(1);
    let needed = u32::try_from(rounds * PATHS.len())?.saturating_mul(price);
    crate::credits::prove_with_bar(wallet.clone(), credits, needed, None).await?;
    let mut latency: [Vec<f64>; 3] = Default::default();
    let mut echoes: [Vec<u64>; 3] = Default::default();
    let mut overflows = [0usize; 3];
    for round in 0..rounds {
        for (i, &path) in PATHS.iter().enumerate() {
            let mut specs = vec![JobSpec {
                path,
                bucket: plan.bucket_for(path),
                ..template.clone()
            }];
            crate::credits::pay_all(credits, &wallet, &mut specs)?;
            let before = compute_echoes(net);
            let report = run_jobs(&net.client, specs).await?;
            let courier = compute_echoes(net) - before;
            let job = match report.jobs.into_iter().next() {
                Some(Ok(job)) => job,
                Some(Err(e)) => anyhow::bail!("a {} job failed: {e:#}", path.name()),
                None => anyhow::bail!("no job ran"),
            };
            if job.outcome == Outcome::Overflow {
                overflows[i] += 1;
            }
            let compute_us = journal_entry(&job.output_box)
                .and_then(|r| Some(r.finished? - r.started?))
                .unwrap_or(0);
            let total_us = job.timeline.done.saturating_sub(job.timeline.started);
            latency[i].push(total_us.saturating_sub(compute_us) as f64 / 1e6);
            echoes[i].push(job.echoes + courier);
        }
        println!(
            "   round {:>2}: {}",
            round + 1,
            PATHS
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{} {:.2} s", p.name(), latency[i][round]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let spacing = parameters.bucket_spacing_us as f64 / 1e6;
    println!("   path    bucket  mean    p50     p95     echoes/job  OVERFLOW  (end to end minus compute, s)");
    for (i, &path) in PATHS.iter().enumerate() {
        let mut l = latency[i].clone();
        l.sort_by(f64::total_cmp);
        let at = |q: f64| l[((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1];
        let mean = l.iter().sum::<f64>() / l.len() as f64;
        let echo_mean = echoes[i].iter().sum::<u64>() as f64 / echoes[i].len() as f64;
        println!(
            "   {:<7} {:>5.2}  {mean:>6.3}  {:>6.3}  {:>6.3}  {echo_mean:>10.2}  {}/{}",
            path.name(),
            f64::from(plan.bucket_for(path)) * spacing,
            at(0.5),
            at(0.95),
            overflows[i],
            l.len()
        );
    }
    let mu = parameters.mean_delay_us as f64 / 1e6;
    println!(
        "   the paper's model: five echoes {:.3} s, its three-echo variant {:.3} s",
        45.0 * mu,
        27.0 * mu
    );
    Ok(())
}

/// Clients sending cover in the demo: its own and the two compute couriers'.
const DEMO_CLIENTS: usize = 3;
/// The most of the machine's cores the demo's idle cover may take.
const COVER_SHARE: f64 = 0.2;
/// The demo never sends slower than this (a slot every 200 ms on average).
const MIN_DEMO_RATE: f64 = 5.0;
/// How much slower than measured a model may run in the network before its
/// job overflows.
const COMPUTE_MARGIN: f64 = 3.0;

fn ask_sampling() -> Sampling {
    Sampling {
        seed: 7,
        temperature: 0.7,
        top_p: Some(0.95),
        max_tokens: 32,
    }
}

/// Runs `model` once on the prompt, as a compute courier would, and returns
/// the seconds it took (the second of two runs: the first warms it up).
fn time_model(
    models: &funion_inference::Models,
    model: &str,
    task: Task,
    tokens: &[u32],
    output_class: u32,
    sampling: Sampling,
) -> anyhow::Result<f64> {
    let backend = models
        .get(model)
        .ok_or_else(|| anyhow::anyhow!("no model {model}"))?;
    let item = funion_compute::WorkItem {
        job: 0,
        model: model.to_string(),
        task,
        tokens: tokens.to_vec(),
        sampling,
        output_class,
    };
    let mut took = 0.0;
    for _ in 0..2 {
        let clock = std::time::Instant::now();
        if let Some(Err(error)) = backend.run(std::slice::from_ref(&item)).pop() {
            anyhow::bail!("{model} failed on the prompt: {error}");
        }
        took = clock.elapsed().as_secs_f64();
    }
    Ok(took)
}

/// The latency bucket for the demo's jobs: t_j must cover the compute
/// courier's fetch (one echo, its slow tail, slot waits and the work at each
/// hop), the batch wait and the model with a margin.
struct BucketPlan {
    fetch_s: f64,
    batch_s: f64,
    compute_s: f64,
    edge_s: f64,
    bucket: u32,
    /// The bucket when it counts from the input in hand.
    from_input: u32,
}

impl BucketPlan {
    fn new(
        parameters: &Parameters,
        cost: &funion_devnet::calibrate::CoverCost,
        model_s: f64,
        batch_window_ms: u64,
    ) -> Self {
        let mu_s = parameters.mean_delay_us as f64 / 1e6;
        // Nine hops of Exp(μ) (99th percentile), three slot gaps, the work
        // at each of the nine hops four times over (queues), and 50 ms for
        // the replicas.
        let fetch_s = erlang_quantile(9, mu_s, 0.99)
            + 3.0 / parameters.send_rate()
            + 9.0 * 4.0 * cost.per_loop_us() / cost.hops.max(1) as f64 / 1e6
            + 0.05;
        let batch_s = batch_window_ms as f64 / 1e3;
        let compute_s = model_s * COMPUTE_MARGIN + 0.05;
        let spacing = parameters.bucket_spacing_us as f64 / 1e6;
        let bucket = ((fetch_s + batch_s + compute_s) / spacing).ceil().max(1.0) as u32;
        let from_input = ((batch_s + compute_s) / spacing).ceil().max(1.0) as u32;
        BucketPlan {
            fetch_s,
            batch_s,
            compute_s,
            edge_s: f64::from(bucket) * spacing,
            bucket,
            from_input,
        }
    }

    /// The bucket for a job by `path`: the fast and store paths' buckets
    /// count from the input in hand, so they need not cover the fetch.
    fn bucket_for(&self, path: JobPath) -> u32 {
        match path {
            JobPath::Serial => self.bucket,
            JobPath::Fast | JobPath::Store => self.from_input,
        }
    }
}

fn compute_echoes(net: &devnet::Devnet) -> u64 {
    net.nodes.iter().map(|n| n.metrics.compute("echoes")).sum()
}

fn show(
    report: &JobsReport,
    courier_echoes: u64,
    parameters: &Parameters,
    answer: impl Fn(&Outcome) -> String,
) -> anyhow::Result<()> {
    let Some(Ok(job)) = report.jobs.first() else {
        let error = report.jobs.first().and_then(|j| j.as_ref().err());
        anyhow::bail!("the job failed: {error:?}");
    };
    let record: Option<ComputeRecord> = journal_entry(&job.output_box);
    let t = &job.timeline;
    let at = |us: u64| us.saturating_sub(t.started) as f64 / 1e6;
    println!("   answer: {}", answer(&job.outcome));
    println!("   timeline (seconds since the job started):");
    let mut events: Vec<(f64, String)> = vec![
        (
            at(t.dispatched),
            if job.path == JobPath::Fast {
                "dispatch sent to a compute courier, the input and a held SURB inside".into()
            } else {
                "dispatch sent to a compute courier".into()
            },
        ),
        (at(t.accepted), "dispatch answered (one echo)".into()),
        (
            at(t.done),
            if job.held_reply {
                "output arrived through the held SURB (one trip home, no echo)".into()
            } else {
                format!("output read back (one echo, {} box(es))", job.output_boxes)
            },
        ),
    ];
    if job.path != JobPath::Fast && t.uploaded > 0 {
        events.push((at(t.uploaded), "input uploaded (one echo)".into()));
    }
    if let Some(r) = &record {
        events.push((
            at(r.taken),
            format!(
                "compute courier took the job; its edge t_j is +{:.3} s from here",
                (r.edge - r.taken) as f64 / 1e6
            ),
        ));
        if let Some(f) = r.fetched {
            events.push((
                at(f),
                "input fetched by the compute courier (one echo)".into(),
            ));
        }
        if let (Some(s), Some(e)) = (r.started, r.finished) {
            events.push((at(s), format!("model started, batch of {}", r.batch_size)));
            events.push((
                at(e),
                format!(
                    "model done ({:.3} s); waiting for the edge",
                    (e - s) as f64 / 1e6
                ),
            ));
        }
        events.push((
            at(r.released),
            format!(
                "bucket edge: output {}handed to the mixnet {:.1} ms after t_j",
                if r.overflow { "(OVERFLOW) " } else { "" },
                (r.released - r.edge) as f64 / 1e3
            ),
        ));
        if let (Some(s), false) = (r.stored, job.held_reply) {
            events.push((
                at(s),
                format!(
                    "output stored (one echo, {} box(es) of {} B)",
                    r.boxes, r.box_len
                ),
            ));
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (time, text) in events {
        println!("     {time:>7.3}  {text}");
    }
    let total = at(t.done);
    let echoes = report.stats.echoes + courier_echoes;
    let mu = parameters.mean_delay_us as f64 / 1e6;
    let model_echo = 9.0 * mu;
    let compute_s = record
        .as_ref()
        .and_then(|r| Some((r.finished? - r.started?) as f64 / 1e6))
        .unwrap_or(0.0);
    let bucket_s = record
        .as_ref()
        .map_or(0.0, |r| (r.edge - r.taken) as f64 / 1e6);
    println!(
        "   {echoes} echoes ({} by the client; {courier_echoes} by the compute courier){}",
        report.stats.echoes,
        if job.held_reply {
            ", and the output's one trip home through the held SURB"
        } else {
            ""
        }
    );
    println!(
        "   end to end {total:.3} s; minus compute {:.3} s = {:.3} s; minus the whole bucket {bucket_s:.3} s = {:.3} s",
        compute_s,
        total - compute_s,
        total - bucket_s
    );
    println!(
        "   paper's model: one echo ~ Erlang(9, μ), mean {model_echo:.3} s; five echoes {:.3} s on top of compute (9.0 s at μ = 0.2 s)",
        5.0 * model_echo
    );
    Ok(())
}

/// The parameters as the devnet published them (with its ledger's address).
fn parameters_with_ledger(net: &devnet::Devnet, parameters: &Parameters) -> Parameters {
    let mut parameters = parameters.clone();
    parameters.credits.ledger_url = net.ledger_url.clone();
    parameters
}
