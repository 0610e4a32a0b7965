//! The benchmarks' machine ceilings as a command, so the probes stay out of the addon:
//! `cargo run --release -p ferroconv-kernels --features probes --example peak -- fma THREADS MILLIS`
//! prints the FMA peak in GFLOP/s; `... -- bandwidth THREADS` the triad bandwidth in GB/s.
use ferroconv_kernels::peak::{fma_peak_gflops, memory_bandwidth_gbs};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> usize {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| usage())
    };
    let reading = match args.first().map(String::as_str) {
        Some("fma") => fma_peak_gflops(num(1), num(2)),
        Some("bandwidth") => memory_bandwidth_gbs(num(1)),
        _ => usage(),
    };
    match reading {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("peak: {e}");
            std::process::exit(1);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: peak fma THREADS MILLIS | peak bandwidth THREADS");
    std::process::exit(2)
}
