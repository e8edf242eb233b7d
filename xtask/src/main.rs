//! `cargo xtask`: thin entry point. Everything lives in the library; see `docs/ARCHITECTURE.md`.

fn main() {
    std::process::exit(xtask::cli::main());
}
