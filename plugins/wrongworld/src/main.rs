//! Not a weir plugin: a plain command (world wasi:cli/command).

fn main() {
    println!("hi");
}
