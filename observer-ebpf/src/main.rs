//! Kernel programs of registry-observer.
//!
//! Small and boring by design: capture ids and bytes, always allow the
//! traffic, and leave every protocol parser to user space.

#![no_std]
#![no_main]

mod connect;
mod dns;
mod emit;
mod lineage;
mod outcome;
mod owner;
mod skb;
mod tcp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: the cgroup hooks call GPL-only helpers
// (bpf_get_current_comm and friends).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
