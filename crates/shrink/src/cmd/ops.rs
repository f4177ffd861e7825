//! `shrink ops`: the ops the runtime implements.

pub fn run() -> anyhow::Result<()> {
    for name in shrink_runtime::Registry::standard().names() {
        println!("{name}");
    }
    Ok(())
}
