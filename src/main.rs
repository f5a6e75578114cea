//! The `likeboard` binary: read the configuration, run the server, report the
//! error chain once. Everything else lives in the library.

use std::process::ExitCode;

use likeboard::config::{Command, Config, USAGE};

fn main() -> ExitCode {
    let command = match Config::from_args(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("likeboard: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match command {
        Command::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("likeboard {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Run(config) => *config,
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match likeboard::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = e.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("likeboard: {message}");
            ExitCode::FAILURE
        }
    }
}
