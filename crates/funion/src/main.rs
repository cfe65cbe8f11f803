//! `funion`: the one binary. Every role and tool of the system is a
//! subcommand; this file only parses the command line and reports errors.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Vectors { command } => vectors::run(command),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("funion: {error:#}");
            ExitCode::FAILURE
        }
    }
}
