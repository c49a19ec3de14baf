//! Stage 1, load: the kernel programs, attached to the cgroup2 root.
//!
//! Dropping [`Probes`] detaches every program (aya owns the links), which is
//! how the agent guarantees nothing stays attached to the root cgroup after
//! it exits.

pub mod offsets;

use std::{fs::File, path::Path};

use anyhow::{Context, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr},
};
use observer_common::KernelOffsets;

/// The eBPF object built by build.rs from observer-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

/// Ring-buffer size: at ~600 bytes per DNS record and a drain every 10 ms,
/// 4 MiB absorbs bursts of ~7000 DNS packets per drain.
pub const RING_BUFFER_BYTES: u32 = 4 << 20;

/// A ring buffer size the kernel accepts: a power of two and a whole
/// number of pages.
pub fn valid_ring_buffer_bytes(bytes: u32) -> bool {
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    bytes.is_power_of_two() && bytes >= page
}

/// Programs without which the observer cannot do its job: loading fails if
/// one of them does.
const CORE_SOCK_ADDR: [&str; 2] = ["connect4", "connect6"];
const CORE_SKB: [(&str, CgroupSkbAttachType); 2] = [
    ("skb_egress", CgroupSkbAttachType::Egress),
    ("skb_ingress", CgroupSkbAttachType::Ingress),
];
/// Programs that add evidence (unconnected UDP, lineage, outcomes); a
/// kernel that refuses one is reported in the report's `hooks_missing`.
const EXTRA_SOCK_ADDR: [&str; 2] = ["sendmsg4", "sendmsg6"];
/// (program, BTF tracepoint) pairs.
const TRACEPOINTS: [(&str, &str); 4] = [
    ("process_exec", "sched_process_exec"),
    ("process_fork", "sched_process_fork"),
    ("process_exit", "sched_process_exit"),
    ("sock_state", "inet_sock_set_state"),
];

/// Attached programs; drop to detach.
pub struct Probes {
    _ebpf: Ebpf,
    /// Names of the programs attached.
    pub attached: Vec<&'static str>,
    /// Programs that could not be attached, with the reason.
    pub missing: Vec<(&'static str, String)>,
}

/// The maps user space reads, alive independently of the programs so the
/// final drain can run after detaching.
pub struct Maps {
    pub events: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
}

pub fn load_and_attach(
    cgroup_root: &Path,
    ring_buffer_bytes: u32,
) -> anyhow::Result<(Probes, Maps)> {
    raise_memlock_limit();
    let own_tgid = std::process::id();
    let mut missing = Vec::new();
    // Without offsets the lineage and outcome programs load but do nothing.
    let offsets = offsets::read(Path::new(offsets::VMLINUX_BTF)).unwrap_or_else(|e| {
        for (name, _) in TRACEPOINTS {
            missing.push((name, format!("kernel field offsets unavailable: {e:#}")));
        }
        KernelOffsets::default()
    });
    release_freed_memory();
    let mut ebpf = EbpfLoader::new()
        .override_global("OBSERVER_TGID", &own_tgid, true)
        .override_global("OFFSETS", &offsets, true)
        .map_max_entries("EVENTS", ring_buffer_bytes)
        .load(OBJECT)
        .map_err(|e| anyhow!(explain_load_error(&e.to_string())))?;
    let cgroup = File::open(cgroup_root)
        .with_context(|| format!("opening the cgroup2 root {}", cgroup_root.display()))?;
    let mut attached = Vec::new();

    for name in CORE_SOCK_ADDR {
        attach_sock_addr(&mut ebpf, name, &cgroup)
            .with_context(|| format!("attaching {name} to {}", cgroup_root.display()))?;
        attached.push(name);
    }
    for (name, direction) in CORE_SKB {
        let program: &mut CgroupSkb = program(&mut ebpf, name)?;
        program
            .load()
            .map_err(|e| anyhow!(explain_load_error(&format!("{name}: {e:?}"))))?;
        program
            .attach(&cgroup, direction, CgroupAttachMode::Single)
            .with_context(|| format!("attaching {name} to {}", cgroup_root.display()))?;
        attached.push(name);
    }
    for name in EXTRA_SOCK_ADDR {
        match attach_sock_addr(&mut ebpf, name, &cgroup) {
            Ok(()) => attached.push(name),
            Err(e) => missing.push((name, format!("{e:#}"))),
        }
    }
    if offsets.valid != 0 {
        match Btf::from_sys_fs() {
            Ok(btf) => {
                for (name, tracepoint) in TRACEPOINTS {
                    match attach_tracepoint(&mut ebpf, name, tracepoint, &btf) {
                        Ok(()) => attached.push(name),
                        Err(e) => missing.push((name, format!("{e:#}"))),
                    }
                }
            }
            Err(e) => {
                for (name, _) in TRACEPOINTS {
                    missing.push((name, format!("kernel BTF unavailable: {e}")));
                }
            }
        }
    }

    let events = ebpf
        .take_map("EVENTS")
        .ok_or_else(|| anyhow!("the eBPF object has no EVENTS map"))?;
    let counters = ebpf
        .take_map("COUNTERS")
        .ok_or_else(|| anyhow!("the eBPF object has no COUNTERS map"))?;
    Ok((
        Probes {
            _ebpf: ebpf,
            attached,
            missing,
        },
        Maps {
            events: RingBuf::try_from(events)?,
            counters: PerCpuArray::try_from(counters)?,
        },
    ))
}

fn attach_sock_addr(ebpf: &mut Ebpf, name: &str, cgroup: &File) -> anyhow::Result<()> {
    let program: &mut CgroupSockAddr = program(ebpf, name)?;
    program
        .load()
        .map_err(|e| anyhow!(explain_load_error(&format!("{name}: {e:?}"))))?;
    // Single through a link coexists with other programs' links; the
    // AllowMultiple link mode is rejected by some kernels (EINVAL).
    program.attach(cgroup, CgroupAttachMode::Single)?;
    Ok(())
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    name: &str,
    tracepoint: &str,
    btf: &Btf,
) -> anyhow::Result<()> {
    let program: &mut BtfTracePoint = program(ebpf, name)?;
    program
        .load(tracepoint, btf)
        .map_err(|e| anyhow!(explain_load_error(&format!("{name}: {e:?}"))))?;
    program.attach()?;
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?;
    program
        .try_into()
        .with_context(|| format!("program {name} has an unexpected type"))
}

/// Parsing the kernel's BTF (several MB, ~100k types) allocates tens of MB
/// that are freed at once; glibc keeps freed heap mapped, so without a trim
/// they would stay in the agent's resident memory for the whole run.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Kernels >= 5.11 account BPF memory to the cgroup and ignore
/// RLIMIT_MEMLOCK; older ones need it raised. Without CAP_SYS_RESOURCE the
/// raise fails, which is harmless on the newer kernels.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to a local rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
}

/// Turns the kernel's terse refusals into a sentence with a fix.
fn explain_load_error(detail: &str) -> String {
    let first_line = detail.lines().next().unwrap_or(detail);
    if detail.contains("Operation not permitted")
        || detail.contains("PermissionDenied") && detail.contains("code: 1,")
    {
        format!(
            "the kernel refused to load the eBPF programs (EPERM): run as root with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN ({first_line})"
        )
    } else if detail.contains("Function not implemented")
        || detail.contains("Invalid argument") && detail.contains("map")
    {
        format!(
            "this kernel lacks the BPF support the observer needs (cgroup BPF programs and ring buffers, Linux >= 5.8 with CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF) ({first_line})"
        )
    } else {
        format!("loading the eBPF programs failed: {detail}")
    }
}
