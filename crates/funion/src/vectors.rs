//! `funion vectors check FILE...`: checks hpqc-format test-vector files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

/// The `vectors` subcommands.
#[derive(Subcommand)]
pub enum VectorsCommand {
    /// Checks every vector of every section in each file; exits 0 only if
    /// every vector of every file passes and every section is known.
    Check {
        /// Files in hpqc's test-vector format (single sections or bundles).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also print each section and its vector count.
        #[arg(short, long)]
        verbose: bool,
    },
}

/// Runs a `vectors` subcommand, printing one line per file.
pub fn run(command: VectorsCommand) -> anyhow::Result<ExitCode> {
    let VectorsCommand::Check { files, verbose } = command;
    let mut all_passed = true;
    for path in &files {
        let shown = path.display();
        let report = match funion_vectors::check_file(path) {
            Ok(report) => report,
            Err(error) => {
                println!("FAIL {shown}: {error}");
                all_passed = false;
                continue;
            }
        };
        let checked = report.checked();
        let sections = report.sections.len();
        if report.passed() && checked > 0 {
            let plural = if sections == 1 { "" } else { "s" };
            println!("ok   {shown}: {checked} vectors in {sections} section{plural}, all passed");
        } else {
            all_passed = false;
            let mut problems = Vec::new();
            if checked == 0 {
                problems.push("no vectors checked".to_string());
            }
            if !report.failures.is_empty() {
                problems.push(format!(
                    "{} of {checked} vectors failed",
                    report.failures.len()
                ));
            }
            if !report.unknown_sections.is_empty() {
                problems.push(format!(
                    "unknown sections not checked: {}",
                    report.unknown_sections.join(", ")
                ));
            }
            println!("FAIL {shown}: {}", problems.join("; "));
        }
        for failure in &report.failures {
            println!(
                "     {}/{}: {}",
                failure.section, failure.vector, failure.reason
            );
        }
        if verbose {
            for (section, count) in &report.sections {
                println!("     {section}: {count}");
            }
        }
    }
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
