//! `rackboot-tiny`: the embedded profile of rackboot, runnable on a Linux host.
//!
//! pxe-core's DHCP and TFTP engines and a small HTTP responder run as embassy tasks on an
//! embassy-net (smoltcp) stack, with every buffer sized at compile time and no heap in the boot
//! path. The host stands in for a board: a TAP device for its NIC, a fixed-size file for its
//! flash, embassy-time's std driver for its timer ([`board`]).
//!
//! ```text
//! rackboot-tiny serve --flash FILE --tap TAP [--mac 02:00:00:00:00:01]
//! rackboot-tiny store --flash FILE net --server IP/PREFIX --pool FIRST-LAST [--lease-secs N]
//! rackboot-tiny store --flash FILE boot-file NAME SOURCE
//! rackboot-tiny store --flash FILE reserve --mac MAC --ip IP --xname X --nid N
//!     --kernel NAME --initrd NAME [--params "..."] [--boot-file NAME]
//! rackboot-tiny store --flash FILE show
//! ```
//! The `store` commands write the flash image a board would be provisioned with.

mod alloc_count;
mod board;
mod cli;
mod http;
mod serve;
mod store;

#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = cli::run(&args) {
        eprintln!("rackboot-tiny: {e}");
        std::process::exit(2);
    }
}
