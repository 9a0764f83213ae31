fn main() -> std::process::ExitCode {
    msf_cmk_controller::cli::main()
}
