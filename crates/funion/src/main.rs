//! `funion`: the one binary. Every role and tool of the system is a
//! subcommand; this file only parses the command line and reports errors.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod credits;
mod inference;
mod network;
mod plots;
mod privacy;
mod proxy;
mod sim;
mod vectors;

/// Anonymous, paid neural-network inference over a mix network.
#[derive(Parser)]
#[command(name = "funion", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Test vectors in Katzenpost hpqc's JSON format.
    Vectors {
        #[command(subcommand)]
        command: vectors::VectorsCommand,
    },
    /// The deterministic simulator: S clients for T virtual seconds.
    Sim(sim::SimArgs),
    /// A whole network on loopback that keeps running, configs in a folder.
    Devnet(network::DevnetArgs),
    /// Runs one role (node or authority) from its config file.
    Node(network::NodeArgs),
    /// Writes configs for a network spread over several hosts.
    Genconfig(network::GenconfigArgs),
    /// The main job: a whole network in this process, one anonymous
    /// embedding and one generation, with their timelines.
    Demo(inference::DemoArgs),
    /// Deposits and ticket books.
    Credits {
        #[command(subcommand)]
        command: credits::CreditsCommand,
    },
    /// A local OpenAI-compatible server: every request an anonymous,
    /// paid job over the network.
    Proxy(proxy::ProxyArgs),
    /// The client's operations.
    Client {
        #[command(subcommand)]
        command: network::ClientCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let outcome = match cli.command {
        Command::Vectors { command } => vectors::run(command),
        Command::Sim(args) => sim::run_sim(args).map(|()| ExitCode::SUCCESS),
        Command::Genconfig(args) => network::genconfig(args).map(|()| ExitCode::SUCCESS),
        Command::Devnet(args) => block_on(network::devnet(args)),
        Command::Node(args) => block_on(network::run_node(args)),
        Command::Client { command } => block_on(network::client(command)),
        Command::Demo(args) => block_on(inference::demo(args)),
        Command::Credits { command } => block_on(credits::run(command)),
        Command::Proxy(args) => block_on(proxy::run(args)),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("funion: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on(
    future: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(future)
        .map(|()| ExitCode::SUCCESS)
}
