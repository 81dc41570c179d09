fn main() -> std::process::ExitCode {
    wecom_allowlist::cli::main()
}
