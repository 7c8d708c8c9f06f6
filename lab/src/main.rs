//! `pushscan-lab up|down|status`. Being written.
fn main() {
    eprintln!("pushscan-lab: not implemented yet");
    std::process::exit(70);
}
