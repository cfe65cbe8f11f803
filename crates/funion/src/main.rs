//! `funion`: the one binary. Every role and tool of the system is a
//! subcommand; this file only parses the command line and reports errors.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Vectors { command } => vectors::run(command),
        Command::Sim(args) => sim::run_sim(args).map(|()| ExitCode::SUCCESS),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("funion: {error:#}");
            ExitCode::FAILURE
        }
    }
}
