//! The `streamsim` command line: a thin layer that reads files and streams, calls the models
//! and the simulator, and turns their results into output and an exit status
//! (0 = all held, 1 = a violation was found, 2 = bad input or usage).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use streamsim_models::{opscript, wire};

/// Deterministic simulation testbed for Synapse-style multi-writer event streams.
///
/// Environment: RUST_LOG sets the tracing filter (e.g. RUST_LOG=streamsim=debug).
#[derive(Debug, Parser)]
#[command(name = "streamsim", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an ID-generator op script (research/idgen-ops.md): one JSON line out per op.
    Idgen {
        /// The script, JSON lines; `-` reads standard input.
        script: PathBuf,
    },
    /// The replication line protocol codec, byte-compatible with Synapse 1.163.2.
    Wire {
        #[command(subcommand)]
        direction: WireDirection,
    },
}

#[derive(Debug, Subcommand)]
enum WireDirection {
    /// Raw replication bytes on stdin -> one JSON line per line: the command and its fields,
    /// the error Synapse would raise, or {"ignored":"blank"}.
    Decode,
    /// One {"command": NAME, "fields": {...}} per stdin line -> the exact bytes Synapse sends.
    Encode,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("streamsim: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Idgen { script } => {
            let bytes = read_input(&script)?;
            let mut out = std::io::stdout().lock();
            for line in opscript::run_script(&bytes) {
                writeln!(out, "{line}")?;
            }
        }
        Command::Wire { direction } => {
            let input = read_input(Path::new("-"))?;
            let mut out = std::io::stdout().lock();
            match direction {
                WireDirection::Decode => {
                    for outcome in wire::decode_lines(&input) {
                        writeln!(out, "{}", outcome.to_json_line())?;
                    }
                }
                WireDirection::Encode => out.write_all(&wire::encode_lines(&input))?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a file, or standard input for `-`, naming the file in the error.
fn read_input(path: &Path) -> Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
        return Ok(bytes);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
