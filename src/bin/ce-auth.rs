//! `ce-auth`: the companion client of ce-authd. Synchronous, no async runtime;
//! everything lives in [`ce_auth::cli`].

fn main() -> std::process::ExitCode {
    ce_auth::client::main()
}
