//! The `streamsim` command line: a thin layer that reads files and streams, calls the models
//! and the simulator, and turns their results into output and an exit status
//! (0 = all held, 1 = a violation was found, 2 = bad input or usage).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use streamsim_models::bugs::{Bug, Bugs, CATALOGUE};
use streamsim_models::fixes::{Fixes, CATALOGUE as FIX_CATALOGUE};
use streamsim_models::{opscript, wire};
use streamsim_sim::runner::{self, SeedResult};
use streamsim_sim::scenario::Scenario;

mod output;
mod report;

// Simulation allocates and frees small strings and maps per message: glibc's malloc took a
// fifth of `streamsim bench`'s wall time. mimalloc is a drop-in allocator; nothing in a run
// depends on addresses, so traces are unchanged.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run a choreography (tools/synapse/CHOREO.md) through the models: one JSON line of
    /// observables per step, as the system oracle prints them for real Synapse.
    Choreo {
        /// The choreography, JSON lines; `-` reads standard input.
        file: PathBuf,
        /// Apply a proposed fix (f1..f5, or all; tools/synapse/FIXES.md) in every process;
        /// repeatable.
        #[arg(long = "fix", value_name = "NAME", value_parser = parse_fix)]
        fixes: Vec<Fixes>,
    },
    /// Run one seed of a scenario and check every invariant (exit 1 on a violation).
    Run(RunArgs),
    /// Run a range of seeds of a scenario; one summary line, a replay command per failure.
    Sweep(SweepArgs),
    /// Delta-debug a failing run down to a smaller scenario that still fails the same
    /// invariant; print it as a scenario file opening with its replay command (progress on
    /// standard error).
    Shrink(ShrinkArgs),
    /// Speed of the standard (or given) scenario against the models alone and the engine's raw
    /// TCP echo, and how wall time grows with writers and readers.
    Bench {
        /// A scenario file (default: the built-in standard scenario).
        scenario: Option<PathBuf>,
        /// End with one JSON line of the figures (DESIGN.md's field names).
        #[arg(long)]
        json: bool,
    },
    /// List the historical-bug switches (`--bug NAME` on run and sweep), or hunt them.
    Bugs {
        /// For every switch, run generated scenarios until an invariant fails, and the clean
        /// model on the same seeds.
        #[arg(long)]
        hunt: bool,
        /// Seeds per switch.
        #[arg(long, default_value_t = 100, requires = "hunt")]
        budget: u64,
        /// End with one JSON line (DESIGN.md's shape).
        #[arg(long, requires = "hunt")]
        json: bool,
        /// Switches hunted in parallel (default: the machine's cores).
        #[arg(long, requires = "hunt")]
        jobs: Option<usize>,
        /// Hunt with a proposed fix of F1-F5 on in every run (f1..f5, or all); repeatable.
        #[arg(long = "fix", value_name = "NAME", value_parser = parse_fix, requires = "hunt")]
        fixes: Vec<Fixes>,
    },
    /// Run one seed and print the metrics endpoint's Prometheus text at the end (every
    /// node's dataset, with a `node` label); what crashes lost goes to standard error. Exit
    /// status 1 when an invariant failed that no known Synapse bug explains.
    Metrics {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// The simulation seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Turn on a historical-bug switch (see `streamsim bugs`); repeatable.
        #[arg(long = "bug", value_name = "NAME", value_parser = parse_bug)]
        bugs: Vec<Bug>,
        /// Apply a proposed fix of F1-F5 (f1..f5, or all; tools/synapse/FIXES.md); repeatable.
        #[arg(long = "fix", value_name = "NAME", value_parser = parse_fix)]
        fixes: Vec<Fixes>,
    },
    /// The replication line protocol codec, byte-compatible with Synapse 1.163.2.
    Wire {
        #[command(subcommand)]
        direction: WireDirection,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The scenario file (TOML); omit it with `--generated`.
    #[arg(required_unless_present = "generated")]
    scenario: Option<PathBuf>,
    /// Run the scenario generated from the seed (what `bugs --hunt` runs) instead of a file.
    #[arg(long, conflicts_with = "scenario")]
    generated: bool,
    /// Print the scenario as a TOML file (the generated one, every choice of the seed made
    /// explicit) and do not run it.
    #[arg(long)]
    print_scenario: bool,
    /// The simulation seed: every random choice of the run comes from it.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the history as JSON lines (byte-identical for the same scenario and seed).
    #[arg(long, value_name = "FILE.jsonl")]
    trace: Option<PathBuf>,
    /// Write the run as Chrome trace-event JSON (open it in ui.perfetto.dev): a track per
    /// host, background processes as spans, faults and violations as instants, tokens as
    /// counters.
    #[arg(long, value_name = "FILE.json")]
    timeline: Option<PathBuf>,
    /// Turn on a historical-bug switch (see `streamsim bugs`); repeatable.
    #[arg(long = "bug", value_name = "NAME", value_parser = parse_bug)]
    bugs: Vec<Bug>,
    /// Apply a proposed fix of F1-F5 (f1..f5, or all; tools/synapse/FIXES.md); repeatable.
    #[arg(long = "fix", value_name = "NAME", value_parser = parse_fix)]
    fixes: Vec<Fixes>,
    /// Run the seed twice and compare the traces byte for byte (exit 1 if they differ).
    #[arg(long)]
    check_determinism: bool,
    /// How to judge the run: `whole` keeps the history and judges it after the run; `online`
    /// judges each record as it happens and keeps no history (memory stays flat in the run's
    /// length; a suspect run is replayed from its seed and judged whole); `auto` is online
    /// for runs of 5 simulated minutes or more. `--timeline` and `--check-determinism` need
    /// the whole history.
    #[arg(long, value_enum, default_value_t = JudgeArg::Auto)]
    judge: JudgeArg,
}

/// `--judge`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum JudgeArg {
    Auto,
    Whole,
    Online,
}

#[derive(Debug, Args)]
struct SweepArgs {
    /// The scenario file (TOML).
    #[arg(required_unless_present = "generated")]
    scenario: Option<PathBuf>,
    /// Sweep each seed's generated scenario (what `bugs --hunt` runs) instead of a file.
    #[arg(long, conflicts_with = "scenario")]
    generated: bool,
    /// The seed range, `A..B` (B excluded).
    #[arg(long, value_name = "A..B", value_parser = parse_seed_range)]
    seeds: std::ops::Range<u64>,
    /// Turn on a historical-bug switch (see `streamsim bugs`); repeatable.
    #[arg(long = "bug", value_name = "NAME", value_parser = parse_bug)]
    bugs: Vec<Bug>,
    /// Apply a proposed fix of F1-F5 (f1..f5, or all; tools/synapse/FIXES.md); repeatable.
    #[arg(long = "fix", value_name = "NAME", value_parser = parse_fix)]
    fixes: Vec<Fixes>,
    /// Take only shard K of N (K in 1..=N): the seeds A+K-1, A+K-1+N, ... so that N machines
    /// can split one range.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    shard: Option<(u64, u64)>,
    /// Seeds run in parallel on this many threads (default: the machine's cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print one JSON line per seed (seed order) before the summary.
    #[arg(long)]
    json: bool,
    /// Count seeds whose violations are all diagnosed as known Synapse bugs (F1, ...) as
    /// failures too.
    #[arg(long)]
    strict: bool,
}

#[derive(Debug, Args)]
struct ShrinkArgs {
    /// The failing scenario file (TOML); omit it with `--generated`.
    #[arg(required_unless_present = "generated")]
    scenario: Option<PathBuf>,
    /// Shrink the scenario generated from the seed (what `sweep --generated` runs).
    #[arg(long, conflicts_with = "scenario")]
    generated: bool,
    /// The failing seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep a candidate only if it fails on at least `--min-failing` of these seeds instead
    /// of on `--seed` alone (how the regression files are made: a scenario that carries the
    /// bug, not a seed).
    #[arg(long, value_name = "A..B", value_parser = parse_seed_range)]
    seeds: Option<std::ops::Range<u64>>,
    /// With `--seeds`: how many of them must fail (default: all).
    #[arg(long, requires = "seeds")]
    min_failing: Option<usize>,
    /// The invariant to keep failing (default: the run's first unexplained violation, else
    /// its first violation).
    #[arg(long)]
    invariant: Option<String>,
    /// Turn on a historical-bug switch (see `streamsim bugs`); repeatable. The shrunk
    /// scenario must also pass with the switches off on the same seeds.
    #[arg(long = "bug", value_name = "NAME", value_parser = parse_bug)]
    bugs: Vec<Bug>,
    /// Apply a proposed fix of F1-F5 (f1..f5, or all; tools/synapse/FIXES.md); repeatable.
    #[arg(long = "fix", value_name = "NAME", value_parser = parse_fix)]
    fixes: Vec<Fixes>,
    /// Write the scenario to this file (its replay command names it) instead of stdout.
    #[arg(long, short, value_name = "FILE.toml")]
    output: Option<PathBuf>,
    /// A first comment line saying what the scenario shows (default: what fails).
    #[arg(long)]
    title: Option<String>,
    /// Seeds of one candidate run in parallel on this many threads (default: the cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Try at most this many candidates.
    #[arg(long, default_value_t = 400)]
    max_candidates: usize,
}

fn parse_seed_range(text: &str) -> Result<std::ops::Range<u64>, String> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?} is not a range A..B"))?;
    let start: u64 = start.parse().map_err(|e| format!("start {start:?}: {e}"))?;
    let end: u64 = end.parse().map_err(|e| format!("end {end:?}: {e}"))?;
    if start >= end {
        return Err(format!("{text:?} is empty (A must be below B)"));
    }
    Ok(start..end)
}

fn parse_bug(name: &str) -> Result<Bug, String> {
    Bug::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = CATALOGUE.iter().map(|b| b.name).collect();
        format!(
            "no bug switch {name:?}; the switches are {}",
            names.join(", ")
        )
    })
}

fn bug_set(bugs: &[Bug]) -> Bugs {
    bugs.iter().fold(Bugs::NONE, |set, bug| set.with(*bug))
}

/// `--fix NAME`: one of `f1`..`f4`, or `all`.
fn parse_fix(name: &str) -> Result<Fixes, String> {
    Fixes::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = FIX_CATALOGUE.iter().map(|f| f.name).collect();
        format!(
            "no proposed fix {name:?}; the fixes are {}, all",
            names.join(", ")
        )
    })
}

fn fix_set(fixes: &[Fixes]) -> Fixes {
    fixes.iter().fold(Fixes::NONE, |set, f| set.union(*f))
}

fn parse_shard(text: &str) -> Result<(u64, u64), String> {
    let (k, n) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not K/N"))?;
    let k: u64 = k.parse().map_err(|e| format!("K {k:?}: {e}"))?;
    let n: u64 = n.parse().map_err(|e| format!("N {n:?}: {e}"))?;
    if n == 0 || k == 0 || k > n {
        return Err(format!("{text:?}: K must be in 1..=N"));
    }
    Ok((k, n))
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
        Command::Run(args) => return run_scenario(args),
        Command::Sweep(args) => return sweep(args),
        Command::Shrink(args) => return shrink(args),
        Command::Bench { scenario, json } => return bench(scenario.as_deref(), json),
        Command::Metrics {
            scenario,
            seed,
            bugs,
            fixes,
        } => return metrics(&scenario, seed, bug_set(&bugs), fix_set(&fixes)),
        Command::Bugs {
            hunt: true,
            budget,
            json,
            jobs,
            fixes,
        } => return hunt_bugs(budget, json, jobs, fix_set(&fixes)),
        Command::Bugs { .. } => {
            let mut out = output::stdout();
            let invariant_width = CATALOGUE
                .iter()
                .map(|info| info.caught_by.len())
                .max()
                .unwrap_or(0);
            for info in CATALOGUE {
                writeln!(
                    out,
                    "{:<34} {:<4} caught by {:<invariant_width$} {} ({})",
                    info.name, info.id, info.caught_by, info.fault, info.source
                )?;
            }
            writeln!(
                out,
                "proposed fixes (--fix NAME, or --fix all; tools/synapse/FIXES.md):"
            )?;
            for info in FIX_CATALOGUE {
                writeln!(
                    out,
                    "{:<34} {:<4} {} (changes {})",
                    info.name, info.finding, info.rule, info.changes
                )?;
            }
        }
        Command::Idgen { script } => {
            let bytes = read_input(&script)?;
            let mut out = output::stdout();
            for line in opscript::run_script(&bytes) {
                writeln!(out, "{line}")?;
            }
        }
        Command::Choreo { file, fixes } => {
            let bytes = read_input(&file)?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("cannot read {}: not UTF-8", file.display()))?;
            let mut out = output::stdout();
            for line in streamsim_sim::choreo::run_script_with(&text, fix_set(&fixes)) {
                writeln!(out, "{line}")?;
            }
        }
        Command::Wire { direction } => {
            let input = read_input(Path::new("-"))?;
            let mut out = output::stdout();
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

fn load_scenario(path: &Path) -> Result<Scenario> {
    Ok(Scenario::load(path)?)
}

fn run_scenario(args: RunArgs) -> Result<ExitCode> {
    let (scenario, scenario_arg) = match &args.scenario {
        Some(path) => (load_scenario(path)?, path.clone()),
        None => (
            streamsim_sim::generate::generated(args.seed),
            PathBuf::from("--generated"),
        ),
    };
    if args.print_scenario {
        let text = scenario.to_toml();
        let source = match &args.scenario {
            Some(path) => format!("{}", path.display()),
            None => format!("the scenario generated from seed {}", args.seed),
        };
        let mut out = output::stdout();
        writeln!(
            out,
            "# {source}, every choice explicit; run it with --seed {}",
            args.seed
        )?;
        write!(out, "{text}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let bugs = bug_set(&args.bugs);
    let fixes = fix_set(&args.fixes);
    let needs_history = args.timeline.is_some() || args.check_determinism;
    let judging = match args.judge {
        JudgeArg::Online if needs_history => bail!(
            "--judge online keeps no history, which {} needs: use --judge whole or auto",
            if args.timeline.is_some() {
                "--timeline"
            } else {
                "--check-determinism"
            }
        ),
        JudgeArg::Whole => runner::Judging::Whole,
        _ if needs_history => runner::Judging::Whole,
        JudgeArg::Online => runner::Judging::Online,
        JudgeArg::Auto => runner::Judging::Auto,
    };
    // The trace is written as the run goes (an online run keeps no history to write after).
    let trace = match &args.trace {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot write trace {}", path.display()))?;
            Some(std::rc::Rc::new(std::cell::RefCell::new(
                streamsim_sim::history::TraceWriter::new(std::io::BufWriter::new(file)),
            )))
        }
        None => None,
    };
    let sink = trace
        .clone()
        .map(|t| t as std::rc::Rc<std::cell::RefCell<dyn streamsim_sim::history::RecordSink>>);
    let mut report = runner::run_seed_judged(&scenario, args.seed, bugs, fixes, judging, sink);
    let mut out = output::stdout();
    let replay = report::replay_command(&scenario_arg, args.seed, bugs, fixes);
    if let (Some(path), Some(trace)) = (&args.trace, trace) {
        std::rc::Rc::try_unwrap(trace)
            .ok()
            .expect("the run let the trace go")
            .into_inner()
            .finish()
            .with_context(|| format!("cannot write trace {}", path.display()))?;
    }
    report::print_run(&mut out, &report, &replay)?;
    if let Some(path) = &args.timeline {
        let trace = streamsim_sim::timeline::build(
            &scenario.hosts(),
            &report.history,
            &report.metrics,
            &report.violations,
            report.ended_at,
        );
        std::fs::write(path, serde_json::to_vec(&trace)?)
            .with_context(|| format!("cannot write timeline {}", path.display()))?;
        report::print_timeline_pointers(&mut out, path, &scenario.hosts(), &report.violations)?;
    }
    if !args.check_determinism {
        // Written and printed: the reruns below (a long soak's history is gigabytes) need
        // the memory more than this run does.
        report.history = Default::default();
    }
    if let Some(findings) = report.known_findings() {
        writeln!(
            out,
            "known: every violation is diagnosed as Synapse bug{} {} (tools/synapse/FINDINGS.md); a sweep counts this seed as known, not failed",
            if findings.len() == 1 { "" } else { "s" },
            findings.join(", ")
        )?;
        // The proposed fixes of these findings (tools/synapse/FIXES.md), on top of any already
        // applied, suggested only once a rerun shows they remove every violation. A fix can
        // uncover a finding the first violations hid, so the whole set is tried when the
        // named ones are not enough.
        let named = fixes.with_fixes_of(findings.iter().copied());
        let removes = |candidate: streamsim_models::fixes::Fixes| {
            runner::run_seed_fixed(&scenario, args.seed, bugs, candidate)
                .violations
                .is_empty()
        };
        let suggestion = [named, streamsim_models::fixes::Fixes::all()]
            .into_iter()
            .find(|candidate| *candidate != fixes && removes(*candidate));
        match suggestion {
            Some(candidate) => writeln!(
                out,
                "the proposed fixes remove it (rerun checked): {} (tools/synapse/FIXES.md)",
                report::replay_command(&scenario_arg, args.seed, bugs, candidate)
            )?,
            None => writeln!(
                out,
                "the proposed fixes do not remove every violation of this seed: a rerun with --fix all still fails"
            )?,
        }
    }
    if args.check_determinism {
        // The second run keeps its history too (auto would judge a long run online).
        let again = runner::run_seed_judged(
            &scenario,
            args.seed,
            bugs,
            fixes,
            runner::Judging::Whole,
            None,
        );
        let first = report.history.to_json_lines();
        let second = again.history.to_json_lines();
        if first != second {
            let line = first
                .lines()
                .zip(second.lines())
                .position(|(a, b)| a != b)
                .map_or(first.lines().count().min(second.lines().count()), |i| i);
            writeln!(
                out,
                "NOT deterministic: the two traces of seed {} differ first at line {} (hashes {:016x} and {:016x})",
                args.seed,
                line + 1,
                report::fnv64(first.as_bytes()),
                report::fnv64(second.as_bytes())
            )?;
            return Ok(ExitCode::from(1));
        }
        writeln!(
            out,
            "deterministic: two runs gave the same trace ({} records, hash {:016x})",
            report.history.len(),
            report::fnv64(first.as_bytes())
        )?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn metrics(path: &Path, seed: u64, bugs: Bugs, fixes: Fixes) -> Result<ExitCode> {
    let scenario = load_scenario(path)?;
    let report = runner::run_seed_fixed(&scenario, seed, bugs, fixes);
    output::stdout().write_all(report.metrics.endpoint_text.as_bytes())?;
    report::print_metrics_summary(&mut std::io::stderr().lock(), &report)?;
    // As `run` and `sweep` judge: a violation only known Synapse bugs explain is no failure.
    Ok(if report.has_unexplained() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn sweep(args: SweepArgs) -> Result<ExitCode> {
    let loaded = args.scenario.as_deref().map(load_scenario).transpose()?;
    let scenarios = match &loaded {
        Some(scenario) => runner::SweepScenarios::Fixed(scenario),
        None => runner::SweepScenarios::Generated,
    };
    let scenario_arg = args
        .scenario
        .clone()
        .unwrap_or_else(|| PathBuf::from("--generated"));
    let seeds: Vec<u64> = match args.shard {
        Some((k, n)) => args
            .seeds
            .clone()
            .filter(|seed| (seed - args.seeds.start) % n == k - 1)
            .collect(),
        None => args.seeds.clone().collect(),
    };
    if seeds.is_empty() {
        bail!("shard {:?} of {:?} holds no seeds", args.shard, args.seeds);
    }
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let started = std::time::Instant::now();
    let bar = report::progress_bar(seeds.len() as u64);
    let bugs = bug_set(&args.bugs);
    let fixes = fix_set(&args.fixes);
    let results: Vec<SeedResult> = runner::sweep(scenarios, &seeds, bugs, fixes, jobs, &|result| {
        bar.inc(1);
        if !result.passed {
            let verdict = if result.known.is_some() {
                "known"
            } else {
                "failed"
            };
            bar.set_message(format!("seed {} {verdict}", result.seed));
        }
    });
    bar.finish_and_clear();
    let mut out = output::stdout();
    if args.json {
        for result in &results {
            writeln!(out, "{}", serde_json::to_string(result)?)?;
        }
    }
    let label = match args.shard {
        Some((k, n)) => format!(
            "seeds {}..{} shard {k}/{n}",
            args.seeds.start, args.seeds.end
        ),
        None => format!("seeds {}..{}", args.seeds.start, args.seeds.end),
    };
    let mut results = results;
    if args.strict {
        for result in &mut results {
            result.known = None;
        }
    }
    let failed = report::print_sweep(&mut out, &scenario_arg, bugs, fixes, &label, &results)?;
    report::print_sweep_timing(&results, started.elapsed(), jobs);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn shrink(args: ShrinkArgs) -> Result<ExitCode> {
    use streamsim_sim::shrink;
    let (scenario, source) = match &args.scenario {
        Some(path) => (load_scenario(path)?, path.display().to_string()),
        None => (
            streamsim_sim::generate::generated(args.seed),
            format!("the scenario generated from seed {}", args.seed),
        ),
    };
    let bugs = bug_set(&args.bugs);
    let fixes = fix_set(&args.fixes);
    let seeds: Vec<u64> = match &args.seeds {
        Some(range) => range.clone().collect(),
        None => vec![args.seed],
    };
    let min_failing = args.min_failing.unwrap_or(seeds.len());
    if !(1..=seeds.len()).contains(&min_failing) {
        bail!(
            "--min-failing {min_failing}: must be in 1..={} (the number of --seeds)",
            seeds.len()
        );
    }
    let options = shrink::Options {
        seeds: seeds.clone(),
        min_failing,
        bugs,
        fixes,
        jobs: args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        max_candidates: args.max_candidates,
        origin_seed: args.seed,
    };
    if let Some(name) = &args.invariant {
        let known: Vec<&str> = streamsim_sim::checks::CHECKS
            .iter()
            .map(|c| c.name)
            .chain(
                streamsim_sim::aggregation::METRICS_CHECKS
                    .iter()
                    .map(|c| c.name),
            )
            .chain(["host_failure"])
            .collect();
        if !known.contains(&name.as_str()) {
            bail!(
                "--invariant {name}: no such invariant; the invariants are: {}",
                known.join(", ")
            );
        }
    }
    let target = shrink::find_target(&scenario, &options, args.invariant.as_deref())?;
    let mut stderr = std::io::stderr().lock();
    let shrunk = match shrink::shrink(&scenario, target, &options, &mut |line| {
        let _ = writeln!(stderr, "{line}");
    }) {
        Ok(shrunk) => shrunk,
        // The run fails, but no smaller scenario fails on as many seeds as asked: a verdict,
        // not bad input.
        Err(error @ shrink::ShrinkError::TooFew { .. }) => {
            eprintln!("streamsim: {error}");
            return Ok(ExitCode::from(1));
        }
        Err(error) => return Err(error.into()),
    };
    let file = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("shrunk.toml"));
    let seed = shrunk.failing[0];
    let replay = report::replay_command(&file, seed, bugs, fixes);
    let fails_on = match &args.seeds {
        Some(range) => format!(
            "on {} of seeds {}..{}",
            shrunk.failing.len(),
            range.start,
            range.end
        ),
        None => format!("on seed {seed}"),
    };
    let mut shrink_command = match &args.scenario {
        Some(path) => format!("streamsim shrink {}", path.display()),
        None => "streamsim shrink --generated".to_owned(),
    };
    match &args.seeds {
        Some(range) => shrink_command.push_str(&format!(
            " --seed {} --seeds {}..{} --min-failing {min_failing}",
            args.seed, range.start, range.end
        )),
        None => shrink_command.push_str(&format!(" --seed {}", args.seed)),
    }
    for name in bugs.names() {
        shrink_command.push_str(&format!(" --bug {name}"));
    }
    shrink_command.push_str(&fixes.flags());
    // Everything that changes what is kept, so the line can be run again as written.
    if let Some(invariant) = &args.invariant {
        shrink_command.push_str(&format!(" --invariant {invariant}"));
    }
    let mut text = format!("# {replay}\n");
    for line in args.title.iter().flat_map(|title| title.lines()) {
        text.push_str(&format!("# {line}\n"));
    }
    text.push_str(&format!(
        "# Fails {} {fails_on}. Made by `{shrink_command}` from {source}: {} lines -> {} ({} candidates).\n",
        shrunk.target, shrunk.lines_before, shrunk.lines_after, shrunk.candidates
    ));
    text.push_str(&shrink::to_toml(&shrunk.scenario));
    match &args.output {
        Some(path) => std::fs::write(path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => output::stdout().write_all(text.as_bytes())?,
    }
    let _ = writeln!(
        stderr,
        "shrink: {} lines -> {}, {} candidates; replay: {replay}",
        shrunk.lines_before, shrunk.lines_after, shrunk.candidates
    );
    Ok(ExitCode::SUCCESS)
}

fn bench(path: Option<&Path>, json: bool) -> Result<ExitCode> {
    use streamsim_sim::bench;
    let scenario = match path {
        Some(path) => load_scenario(path)?,
        None => Scenario::parse(Path::new("<standard>"), bench::STANDARD_SCENARIO)?,
    };
    let figures = bench::measure(&scenario);
    let mut out = output::stdout();
    writeln!(
        out,
        "standard scenario: {} events, {:.1} s simulated in {:.3} s wall ({:.0}x; fastest of {} runs after a warm-up, median {:.3} s, {:.0}x)",
        figures.events,
        figures.sim_s,
        figures.wall_s,
        figures.sim_over_wall,
        bench::MEASURED_RUNS,
        figures.wall_s_median,
        figures.sim_over_wall_median
    )?;
    writeln!(
        out,
        "  {:.0} events/s, {:.0} replication messages/s (wall)",
        figures.events_per_wall_s, figures.msgs_per_wall_s
    )?;
    writeln!(
        out,
        "  models alone (no network): {:.0} events/s; raw TCP echo (the engine alone): {:.0} messages/s",
        figures.model_only_events_per_wall_s, figures.turmoil_echo_msgs_per_wall_s
    )?;
    writeln!(
        out,
        "scaling (seed 0, wall time, fastest of {} runs):",
        bench::SCALING_RUNS
    )?;
    for point in bench::scaling(&scenario) {
        writeln!(
            out,
            "  writers {:>2} readers {:>2}: {:>6} events, {:>7} messages in {:.3} s ({:.1} µs per message)",
            point.writers,
            point.readers,
            point.events,
            point.messages,
            point.wall_s,
            point.wall_s * 1e6 / point.messages.max(1) as f64
        )?;
    }
    if json {
        writeln!(out, "{}", serde_json::to_string(&figures)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn hunt_bugs(budget: u64, json: bool, jobs: Option<usize>, fixes: Fixes) -> Result<ExitCode> {
    let jobs = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let report = streamsim_sim::hunt::hunt_with_fixes(budget, jobs, fixes);
    let mut out = output::stdout();
    writeln!(
        out,
        "{:<34} {:<7} {:>5} {:>8}  {:<36} replay",
        "bug", "caught", "seeds", "wall s", "invariant"
    )?;
    for hunted in &report.bugs {
        writeln!(
            out,
            "{:<34} {:<7} {:>5} {:>8.2}  {:<36} {}",
            hunted.name,
            if hunted.caught { "yes" } else { "NO" },
            hunted.seeds,
            hunted.wall_s,
            hunted.invariant.unwrap_or("-"),
            hunted.replay.as_deref().unwrap_or("-")
        )?;
    }
    let mut seeds: Vec<u64> = report.bugs.iter().map(|h| h.seeds).collect();
    seeds.sort_unstable();
    if let (Some(low), Some(high)) = (
        seeds.get(seeds.len().saturating_sub(1) / 2),
        seeds.get(seeds.len() / 2),
    ) {
        // The middle seed count, or the mean of the two middle ones.
        let median = (*low + *high) as f64 / 2.0;
        writeln!(
            out,
            "median seeds to catch: {median}; most: {}",
            seeds.last().expect("not empty")
        )?;
    }
    writeln!(
        out,
        "clean model on the same seeds: {} failures",
        report.clean_failures
    )?;
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    }
    let all_caught = report.bugs.iter().all(|h| h.caught);
    Ok(if all_caught && report.clean_failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
