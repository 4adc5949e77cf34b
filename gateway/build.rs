//! Rebuild when the browser pages change: they are embedded in the binary.
fn main() {
    println!("cargo:rerun-if-changed=../static/dist");
}
