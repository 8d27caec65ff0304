fn main() {
    println!("chinwag: not yet wired");
}
