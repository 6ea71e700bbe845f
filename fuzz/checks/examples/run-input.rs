//! Runs one saved input through a target's check: `cargo run -p fuzz-checks --example
//! run-input TARGET FILE` (to debug a crash that `ci/fuzz` saved).
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, file] = args.as_slice() else {
        eprintln!("usage: run-input TARGET FILE");
        std::process::exit(2);
    };
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    match fuzz_checks::check(target, &data) {
        fuzz_checks::Outcome::Checked => println!("{target}: {file}: passed"),
        fuzz_checks::Outcome::Skipped(why) => {
            println!("{target}: {file}: skipped, not a case: {why}");
            std::process::exit(1);
        }
    }
}
