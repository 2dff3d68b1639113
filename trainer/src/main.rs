use clap::Parser;

fn main() {
    let cli = trainer::cli::Cli::parse();
    if let Err(e) = trainer::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
