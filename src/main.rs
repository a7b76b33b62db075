//! The `cairn` binary: parse arguments, set up logging and the runtime, call the library, and
//! turn the outcome into an exit code (DESIGN.md §10). All behaviour lives in the library.

mod cli;

fn main() {
    let code = cli::main();
    std::process::exit(code);
}
