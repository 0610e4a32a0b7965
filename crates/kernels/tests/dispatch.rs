//! The one SIMD dispatch mechanism stays the only one: CPU features are read in `simd.rs` alone,
//! and kernels pick their code through an `Isa` (`kernel!` / `dispatch!`), never by reading the
//! level themselves.
use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.display().to_string(), text));
        }
    }
}

#[test]
fn only_simd_rs_reads_the_cpu_or_the_level() {
    let mut files = vec![];
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 20);
    let mut offenders = vec![];
    for (path, text) in &files {
        if path.ends_with("simd.rs") {
            continue;
        }
        // The conv autotuner keys its choices by the level in use (a choice timed on one level
        // does not hold on another); it never picks code by it.
        let keys_by_level = path.ends_with("conv/tune.rs");
        for pattern in [
            "is_x86_feature_detected",
            "is_aarch64_feature_detected",
            "simd::level()",
            "SimdLevel::Avx2Fma =>",
        ] {
            if text.contains(pattern) && !(keys_by_level && pattern == "simd::level()") {
                offenders.push(format!("{path}: {pattern}"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}
