//! thresig binary: parse the command line and run. Exit code 64 on usage or
//! configuration errors.
fn main() -> std::process::ExitCode {
    thresig::cli::main()
}
