fn main() -> std::process::ExitCode {
    registry_observer::cli::main()
}
