//! `plex86-executor`: the sandboxed process that runs guest code natively. Spawned by
//! `host_driver::Executor::spawn`; not meant to be started by hand.

#[path = "../executor/mod.rs"]
mod executor;

fn main() {
    executor::main()
}
