//! Shared test plumbing: the `streamsim` binary, the real-Synapse oracles, seeds.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the `streamsim` binary with `args` and `stdin`, returning stdout; panics on a
/// non-zero exit, printing stderr.
pub fn streamsim(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamsim"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn streamsim");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin)
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait for streamsim");
    assert!(
        output.status.success(),
        "streamsim {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The Python interpreter of the venv with Synapse 1.163.2, if the environment has one.
pub fn synapse_python(test: &str) -> Option<PathBuf> {
    match std::env::var_os("STREAMSIM_SYNAPSE_PYTHON") {
        Some(python) => Some(PathBuf::from(python)),
        None if std::env::var("STREAMSIM_REQUIRE_SYNAPSE").as_deref() == Ok("1") => {
            panic!("{test}: STREAMSIM_REQUIRE_SYNAPSE=1 but STREAMSIM_SYNAPSE_PYTHON is unset; run `bash .ci/setup-synapse.sh && . target/synapse-env.sh`")
        }
        None => {
            eprintln!("{test}: skipped, no real Synapse (run `bash .ci/setup-synapse.sh && . target/synapse-env.sh`)");
            None
        }
    }
}

/// Runs a Python oracle script under `tools/synapse/` with `args` and `stdin`.
pub fn oracle(python: &Path, script: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(python)
        .arg(repo_root().join("tools/synapse").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the oracle");
    let mut pipe = child.stdin.take().expect("piped");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || pipe.write_all(&input));
    let output = child.wait_with_output().expect("wait for the oracle");
    writer
        .join()
        .expect("stdin writer")
        .expect("write oracle stdin");
    assert!(
        output.status.success(),
        "oracle {script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Seeds for a differential run: `STREAMSIM_DIFF_SEED=N` replays one, else `0..count`.
pub fn diff_seeds(default_count: u64, count_var: &str) -> Vec<u64> {
    if let Ok(seed) = std::env::var("STREAMSIM_DIFF_SEED") {
        return vec![seed.parse().expect("STREAMSIM_DIFF_SEED is a number")];
    }
    let count = std::env::var(count_var)
        .ok()
        .map_or(default_count, |c| c.parse().expect("a count"));
    (0..count).collect()
}

/// A scratch directory under target/, emptied first.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = repo_root().join("target").join("test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
