use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    rackboot::limit_malloc_arenas();
    let cli = rackboot::cli::Cli::parse_from(rackboot::cli::args());
    rackboot::cli::init_logging(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(rackboot::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
