//! `cargo xtask`: thin entry point. Everything lives in the library; see `docs/ARCHITECTURE.md`.

fn main() {
    xtask::cli::quiet_on_closed_pipe();
    std::process::exit(xtask::cli::main());
}
