//! Architecture and style rules that can be checked mechanically: every Rust file opens with
//! a `//!` doc saying what it models or does, and the models never touch a runtime, a clock
//! or unseeded randomness.

use std::path::{Path, PathBuf};

use crate::support::repo_root;

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut missing = Vec::new();
    for dir in ["src", "models/src", "sim/src", "tests"] {
        for file in rust_files(&repo_root().join(dir)) {
            let text = std::fs::read_to_string(&file).expect("read file");
            if !text.starts_with("//!") {
                missing.push(file.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a leading //! doc: {missing:#?}"
    );
}

#[test]
fn models_are_sans_io() {
    let banned = [
        "tokio",
        "turmoil",
        "Instant::now",
        "SystemTime",
        "thread_rng",
        "std::thread",
        "std::net",
        "HashMap",
        "HashSet",
    ];
    let mut found = Vec::new();
    for file in rust_files(&repo_root().join("models/src")) {
        let text = std::fs::read_to_string(&file).expect("read file");
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for word in banned {
                if line.contains(word) {
                    found.push(format!("{}:{}: {word}", file.display(), number + 1));
                }
            }
        }
    }
    let manifest =
        std::fs::read_to_string(repo_root().join("models/Cargo.toml")).expect("models manifest");
    for runtime in ["tokio", "turmoil"] {
        if manifest.contains(runtime) {
            found.push(format!("models/Cargo.toml depends on {runtime}"));
        }
    }
    assert!(
        found.is_empty(),
        "models must stay sans-IO and deterministic: {found:#?}"
    );
}
