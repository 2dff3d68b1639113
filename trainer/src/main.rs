use clap::Parser;

fn main() {
    let cli = trainer::commands::Cli::parse();
    if let Err(e) = trainer::commands::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
