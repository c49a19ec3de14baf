//! Stage 1, load: the kernel programs, attached to the cgroup2 root.
//!
//! Every program is tried on its own: a kernel that refuses one (an older
//! kernel without a helper, a missing attach type) costs that program's
//! evidence, named in [`MissingHook`], and the agent runs on with the rest.
//! Loading fails only when no program that sees registry attempts could be
//! attached, with the kernel's own words for why.
//!
//! What the kernel offers is probed, not inferred from its version: whether
//! cgroup_skb programs may ask for the current task decides how the packet
//! programs learn a DNS query's sender ([`DnsSender`]).
//!
//! Without pins, dropping [`Probes`] detaches every program (aya owns the
//! links), which is how a plain run guarantees nothing stays attached to
//! the root cgroup after it exits. With a [`pins::PinDir`] (service mode)
//! the maps and links live in bpffs: the programs keep observing after the
//! agent exits, and the next agent adopts them, swapping its freshly loaded
//! programs into the pinned links (`BPF_LINK_UPDATE`), never attaching a
//! second copy.
//!
//! Either way, each cgroup program is checked among the effective programs
//! of the cgroup2 root after attaching: one the kernel does not run there
//! is missing, whatever the attach call said.

pub mod offsets;
pub mod pins;
pub mod verifier;

use std::{
    fmt,
    fs::File,
    io,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use anyhow::{Context, anyhow};
use aya::{
    Btf, Ebpf, EbpfError, EbpfLoader,
    maps::{MapData, MapError, MapInfo, MapType, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr,
        ProgramError, ProgramType, links::FdLink,
    },
    sys::{BpfHelper, SyscallError, is_helper_supported, is_map_supported},
};
use observer_common::{KernelOffsets, PROGRAMS, program_index};

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

/// How a program is attached.
#[derive(Clone, Copy)]
enum Attach {
    /// A cgroup sock_addr program, of this `bpf_attach_type` (which its
    /// section names; the number is for BPF_PROG_QUERY).
    SockAddr(u32),
    Skb(CgroupSkbAttachType),
    /// A BTF tracepoint (tp_btf) of this name.
    Tracepoint(&'static str),
}

/// One kernel program: how it attaches and what is missing without it.
struct Hook {
    name: &'static str,
    attach: Attach,
    /// Whether it sees registry attempts itself (a DNS query or a
    /// connection opening): without any such program nothing is observed.
    sees_attempts: bool,
    /// The evidence lost when this program is missing, as the user reads it.
    evidence: &'static str,
}

/// Every program, in attach order: the ones that see attempts first, so a
/// failure of those is known before the others are tried.
const HOOKS: [Hook; 10] = [
    Hook {
        name: "connect4",
        attach: Attach::SockAddr(10),
        sees_attempts: true,
        evidence: "connect() to IPv4 addresses (evidence `connect`) and the TCP first bytes (SNI, HTTP Host) of those connections",
    },
    Hook {
        name: "connect6",
        attach: Attach::SockAddr(11),
        sees_attempts: true,
        evidence: "connect() to IPv6 addresses (evidence `connect`) and the TCP first bytes of those connections",
    },
    Hook {
        name: "skb_egress",
        attach: Attach::Skb(CgroupSkbAttachType::Egress),
        sees_attempts: true,
        evidence: "DNS queries (evidence `dns_query`) and TCP first bytes (evidence `tls_sni`, `http_host`, `http_connect`, DNS over TCP)",
    },
    Hook {
        name: "skb_ingress",
        attach: Attach::Skb(CgroupSkbAttachType::Ingress),
        sees_attempts: false,
        evidence: "DNS answers (evidence `dns_answer`): connects are joined to registry names only through the agent's own resolution and catalog CIDRs",
    },
    Hook {
        name: "sendmsg4",
        attach: Attach::SockAddr(14),
        sees_attempts: true,
        evidence: "datagrams sent with an address on unconnected IPv4 UDP sockets (evidence `sendmsg`)",
    },
    Hook {
        name: "sendmsg6",
        attach: Attach::SockAddr(15),
        sees_attempts: true,
        evidence: "datagrams sent with an address on unconnected IPv6 UDP sockets (evidence `sendmsg`)",
    },
    Hook {
        name: "process_exec",
        attach: Attach::Tracepoint("sched_process_exec"),
        sees_attempts: false,
        evidence: "exe and command line of processes that exit before /proc is read",
    },
    Hook {
        name: "process_fork",
        attach: Attach::Tracepoint("sched_process_fork"),
        sees_attempts: false,
        evidence: "parents (ancestry) of short-lived processes",
    },
    Hook {
        name: "process_exit",
        attach: Attach::Tracepoint("sched_process_exit"),
        sees_attempts: false,
        evidence: "process exits (lineage entries are kept until the table is full)",
    },
    Hook {
        name: "sock_state",
        attach: Attach::Tracepoint("inet_sock_set_state"),
        sees_attempts: false,
        evidence: "connection outcomes (established, refused, timed out: `outcomes`)",
    },
];

// Every program the object has is in HOOKS, in PROGRAMS' names.
const _: () = {
    assert!(HOOKS.len() == PROGRAMS.len());
    let mut i = 0;
    while i < HOOKS.len() {
        program_index(HOOKS[i].name);
        i += 1;
    }
};

/// How the DNS packet programs learn who sent a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsSender {
    /// cgroup_skb may ask for the current task (newer kernels).
    CurrentTask,
    /// It may not: the connect/sendmsg hooks record each DNS socket's
    /// owner, and the packet program reads it back.
    SocketOwner,
}

impl DnsSender {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsSender::CurrentTask => "current_task",
            DnsSender::SocketOwner => "socket_owner",
        }
    }
}

/// A program this kernel did not take.
#[derive(Clone, Debug)]
pub struct MissingHook {
    pub hook: &'static str,
    /// One line: the kernel's key words and errno, for the report.
    pub reason: String,
    /// What evidence is missing as a result.
    pub evidence: &'static str,
    /// The verifier's whole log, when the verifier refused it.
    pub verifier_log: Option<String>,
    /// Refused before any verification with EPERM or EACCES: a privilege,
    /// not a kernel feature, is missing.
    pub permission_denied: bool,
}

/// What the loader is asked to do.
pub struct LoadRequest<'a> {
    pub cgroup_root: &'a Path,
    pub ring_buffer_bytes: u32,
    /// Test-only: programs made to fail verification (see
    /// observer-ebpf's `refuse_if_asked`).
    pub refuse: &'a [String],
    /// Service mode: pin maps and links here, and adopt what is pinned.
    pub pins: Option<&'a pins::PinDir>,
}

/// What happened to a program's pinned link (service mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkAction {
    /// No pinned link: attached and pinned.
    Attached,
    /// The pinned link now runs this agent's program (BPF_LINK_UPDATE).
    Updated,
    /// A tracing (tp_btf) link, which the kernel cannot update: a new link
    /// was attached and pinned first, then the old one unpinned, so for a
    /// moment both ran (their events may come twice, never not at all).
    Reattached,
    /// A cgroup link that could not be updated (why), replaced the same way.
    Replaced(String),
}

/// What service mode found and did in the pin dir.
#[derive(Clone, Debug)]
pub struct Pinning {
    pub dir: PathBuf,
    /// `<boot id>/<EVENTS map id>`: the ring buffer's identity for its life.
    pub ring: String,
    /// The maps were pinned by an earlier agent and are reused.
    pub adopted: bool,
    /// Pins of an incompatible layout were removed first (why); what their
    /// ring held is lost.
    pub incompatible: Option<String>,
    pub links: Vec<(&'static str, LinkAction)>,
}

/// Attached programs; without pins, drop to detach.
pub struct Probes {
    _ebpf: Ebpf,
    /// Service mode: what was pinned and adopted.
    pub pinning: Option<Pinning>,
    /// Names of the programs attached.
    pub attached: Vec<&'static str>,
    /// Programs that could not be attached, with the reason.
    pub missing: Vec<MissingHook>,
    pub dns_sender: DnsSender,
    /// Why the DNS sender is not the current task, as probed.
    pub dns_sender_why: Option<String>,
}

/// The maps user space reads, alive independently of the programs so the
/// final drain can run after detaching.
pub struct Maps {
    pub events: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
}

/// Loading failed as a whole; the message names the cause.
#[derive(Debug)]
pub struct LoadError(String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

pub fn load_and_attach(request: &LoadRequest<'_>) -> anyhow::Result<(Probes, Maps)> {
    raise_memlock_limit();
    let kernel = kernel_release();
    let refuse_mask = refusal_mask(request.refuse)?;
    let own_tgid = std::process::id();
    let (dns_sender, dns_sender_why) = probe_dns_sender();
    let skb_task_context = u32::from(dns_sender == DnsSender::CurrentTask);
    // Without offsets the lineage and outcome programs load but do nothing.
    let (offsets, offsets_error) = match offsets::read(Path::new(offsets::VMLINUX_BTF)) {
        Ok(offsets) => (offsets, None),
        Err(e) => (KernelOffsets::default(), Some(format!("{e:#}"))),
    };
    release_freed_memory();
    let incompatible = match request.pins {
        Some(pins) => replace_incompatible_pins(pins, request.ring_buffer_bytes)?,
        None => None,
    };
    let adopted = request.pins.is_some_and(|pins| pins.map("EVENTS").exists());
    let mut loader = EbpfLoader::new();
    loader
        .override_global("OBSERVER_TGID", &own_tgid, true)
        .override_global("OFFSETS", &offsets, true)
        .override_global("SKB_TASK_CONTEXT", &skb_task_context, true)
        .override_global("REFUSE_PROGRAMS", &refuse_mask, true)
        .map_max_entries("EVENTS", request.ring_buffer_bytes);
    if let Some(pins) = request.pins {
        for name in pins::PINNED_MAPS {
            loader.map_pin_path(name, pins.map(name));
        }
    }
    let mut ebpf = loader
        .load(OBJECT)
        .map_err(|e| LoadError(explain_object_error(&e, &kernel)))?;
    let cgroup = File::open(request.cgroup_root)
        .with_context(|| format!("opening the cgroup2 root {}", request.cgroup_root.display()))?;
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF unavailable: {e}"));

    let mut attached = Vec::new();
    let mut missing = Vec::new();
    let mut links = Vec::new();
    for hook in &HOOKS {
        let result = match (hook.attach, &offsets_error, &btf) {
            (Attach::Tracepoint(_), Some(e), _) => Err(Refusal::plain(format!(
                "kernel field offsets unavailable: {e}"
            ))),
            (Attach::Tracepoint(_), None, Err(e)) => Err(Refusal::plain(e.clone())),
            (_, _, btf) => attach_hook(&mut ebpf, hook, &cgroup, btf.as_ref().ok(), request.pins),
        };
        match result {
            Ok(action) => {
                attached.push(hook.name);
                links.extend(action.map(|action| (hook.name, action)));
            }
            Err(refusal) => missing.push(MissingHook {
                hook: hook.name,
                reason: refusal.reason,
                evidence: hook.evidence,
                verifier_log: refusal.verifier_log,
                permission_denied: refusal.permission_denied,
            }),
        }
    }
    // aya's parse of the kernel BTF is as large as ours was.
    drop(btf);
    release_freed_memory();
    if !HOOKS
        .iter()
        .any(|hook| hook.sees_attempts && attached.contains(&hook.name))
    {
        return Err(LoadError(nothing_attached(&missing, &kernel)).into());
    }

    let pinning = match request.pins {
        Some(pins) => Some(Pinning {
            dir: pins.path().to_path_buf(),
            ring: format!(
                "{}/{}",
                boot_id(),
                MapInfo::from_pin(pins.map("EVENTS"))
                    .map(|info| info.id())
                    .context("reading the pinned ring buffer's id")?
            ),
            adopted,
            incompatible,
            links,
        }),
        None => None,
    };
    let events = ebpf
        .take_map("EVENTS")
        .ok_or_else(|| anyhow!("the eBPF object has no EVENTS map"))?;
    let counters = ebpf
        .take_map("COUNTERS")
        .ok_or_else(|| anyhow!("the eBPF object has no COUNTERS map"))?;
    Ok((
        Probes {
            _ebpf: ebpf,
            pinning,
            attached,
            missing,
            dns_sender,
            dns_sender_why,
        },
        Maps {
            events: RingBuf::try_from(events)?,
            counters: PerCpuArray::try_from(counters)?,
        },
    ))
}

/// The test-only refusal names as the kernel programs' bit mask.
fn refusal_mask(names: &[String]) -> Result<u32, LoadError> {
    let mut mask = 0u32;
    for name in names {
        let index = PROGRAMS.iter().position(|p| p == name).ok_or_else(|| {
            LoadError(format!(
                "cannot refuse {name:?}: not a program (programs: {})",
                PROGRAMS.join(", ")
            ))
        })?;
        mask |= 1 << index;
    }
    Ok(mask)
}

/// Whether cgroup_skb programs may call every current-task helper the DNS
/// capture uses, and if not, which one is refused (or why the probe could
/// not tell). A probe that cannot decide counts as "no": the socket-owner
/// path works on every kernel.
fn probe_dns_sender() -> (DnsSender, Option<String>) {
    let helpers = [
        (
            BpfHelper::BPF_FUNC_get_current_pid_tgid,
            "bpf_get_current_pid_tgid",
        ),
        (
            BpfHelper::BPF_FUNC_get_current_uid_gid,
            "bpf_get_current_uid_gid",
        ),
        (BpfHelper::BPF_FUNC_get_current_comm, "bpf_get_current_comm"),
    ];
    for (helper, name) in helpers {
        match is_helper_supported(ProgramType::CgroupSkb, helper) {
            Ok(true) => {}
            Ok(false) => {
                return (
                    DnsSender::SocketOwner,
                    Some(format!(
                        "cgroup_skb programs may not call {name} on this kernel"
                    )),
                );
            }
            Err(e) => {
                return (
                    DnsSender::SocketOwner,
                    Some(format!("probing {name} for cgroup_skb failed: {e}")),
                );
            }
        }
    }
    (DnsSender::CurrentTask, None)
}

/// Why one program is missing.
struct Refusal {
    reason: String,
    verifier_log: Option<String>,
    permission_denied: bool,
}

impl Refusal {
    fn plain(reason: String) -> Refusal {
        Refusal {
            reason,
            verifier_log: None,
            permission_denied: false,
        }
    }

    fn failed(step: &str, call: &str, io_error: &io::Error) -> Refusal {
        Refusal {
            reason: format!("{step} failed: {call}: {}", errno_text(io_error)),
            verifier_log: None,
            permission_denied: is_permission(io_error),
        }
    }

    /// A load or attach error in words: the verifier's key line and the
    /// errno for a refused program, the syscall and errno otherwise.
    fn from_program_error(step: &str, error: &ProgramError) -> Refusal {
        match error {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                let log = verifier_log.to_string();
                if log.trim().is_empty() {
                    // Refused before the verifier ran.
                    return Refusal::failed(step, "bpf_prog_load", io_error);
                }
                let key = verifier::key_line(&log)
                    .map(|line| format!(": {line}"))
                    .unwrap_or_default();
                Refusal {
                    reason: format!("the verifier refused it{key} ({})", errno_text(io_error)),
                    verifier_log: Some(log),
                    permission_denied: false,
                }
            }
            ProgramError::SyscallError(SyscallError { call, io_error }) => {
                Refusal::failed(step, call, io_error)
            }
            other => Refusal::plain(format!("{step} failed: {other}")),
        }
    }
}

/// Loads one program and attaches it: through aya (which detaches it when
/// the agent exits), or in service mode through its pinned link. Returns
/// what happened to the pin, if any.
fn attach_hook(
    ebpf: &mut Ebpf,
    hook: &Hook,
    cgroup: &File,
    btf: Option<&Btf>,
    pins: Option<&pins::PinDir>,
) -> Result<Option<LinkAction>, Refusal> {
    match hook.attach {
        Attach::SockAddr(attach_type) => {
            let program: &mut CgroupSockAddr = program(ebpf, hook.name)?;
            attach_with(program, hook, cgroup, pins, Some(attach_type))
        }
        Attach::Skb(direction) => {
            let attach_type = match direction {
                CgroupSkbAttachType::Ingress => 0,
                CgroupSkbAttachType::Egress => 1,
            };
            let program: &mut CgroupSkb = program(ebpf, hook.name)?;
            attach_with(
                &mut SkbHook(program, direction),
                hook,
                cgroup,
                pins,
                Some(attach_type),
            )
        }
        Attach::Tracepoint(tracepoint) => {
            let btf = btf.ok_or_else(|| Refusal::plain("kernel BTF unavailable".into()))?;
            let program: &mut BtfTracePoint = program(ebpf, hook.name)?;
            attach_with(
                &mut TracepointHook(program, tracepoint, btf),
                hook,
                cgroup,
                pins,
                None,
            )
        }
    }
}

/// What attaching needs of each kind of program; aya's program types share
/// these steps without a common trait.
trait Attachable {
    fn load_program(&mut self) -> Result<(), ProgramError>;
    fn program_info(&self) -> Result<aya::programs::ProgramInfo, ProgramError>;
    fn program_fd(&self) -> Result<&aya::programs::ProgramFd, ProgramError>;
    /// Attaches; with `keep`, takes the link from aya (which would detach
    /// it at exit) to be pinned.
    fn attach_link(&mut self, cgroup: &File, keep: bool) -> Result<Option<FdLink>, Refusal>;
}

fn attach_error(step: &str) -> impl Fn(ProgramError) -> Refusal + '_ {
    move |e| Refusal::from_program_error(step, &e)
}

const ON_ROOT: &str = "attaching to the cgroup2 root";

// Single through a link coexists with other programs' links; the
// AllowMultiple link mode is rejected by some kernels (EINVAL).
impl Attachable for CgroupSockAddr {
    fn load_program(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
    fn program_info(&self) -> Result<aya::programs::ProgramInfo, ProgramError> {
        self.info()
    }
    fn program_fd(&self) -> Result<&aya::programs::ProgramFd, ProgramError> {
        self.fd()
    }
    fn attach_link(&mut self, cgroup: &File, keep: bool) -> Result<Option<FdLink>, Refusal> {
        let id = self
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(attach_error(ON_ROOT))?;
        keep.then(|| fd_link(self.take_link(id))).transpose()
    }
}

struct SkbHook<'a>(&'a mut CgroupSkb, CgroupSkbAttachType);

impl Attachable for SkbHook<'_> {
    fn load_program(&mut self) -> Result<(), ProgramError> {
        self.0.load()
    }
    fn program_info(&self) -> Result<aya::programs::ProgramInfo, ProgramError> {
        self.0.info()
    }
    fn program_fd(&self) -> Result<&aya::programs::ProgramFd, ProgramError> {
        self.0.fd()
    }
    fn attach_link(&mut self, cgroup: &File, keep: bool) -> Result<Option<FdLink>, Refusal> {
        let id = self
            .0
            .attach(cgroup, self.1, CgroupAttachMode::Single)
            .map_err(attach_error(ON_ROOT))?;
        keep.then(|| fd_link(self.0.take_link(id))).transpose()
    }
}

struct TracepointHook<'a>(&'a mut BtfTracePoint, &'static str, &'a Btf);

impl Attachable for TracepointHook<'_> {
    fn load_program(&mut self) -> Result<(), ProgramError> {
        self.0.load(self.1, self.2)
    }
    fn program_info(&self) -> Result<aya::programs::ProgramInfo, ProgramError> {
        self.0.info()
    }
    fn program_fd(&self) -> Result<&aya::programs::ProgramFd, ProgramError> {
        self.0.fd()
    }
    fn attach_link(&mut self, _cgroup: &File, keep: bool) -> Result<Option<FdLink>, Refusal> {
        let id = self.0.attach().map_err(attach_error("attaching"))?;
        keep.then(|| {
            self.0
                .take_link(id)
                .map(FdLink::from)
                .map_err(attach_error("attaching"))
        })
        .transpose()
    }
}

/// Load, then swap into the pinned link or attach (and pin), then verify.
fn attach_with(
    program: &mut impl Attachable,
    hook: &Hook,
    cgroup: &File,
    pins: Option<&pins::PinDir>,
    query: Option<u32>,
) -> Result<Option<LinkAction>, Refusal> {
    program.load_program().map_err(attach_error("loading"))?;
    let program_id = program_id(program.program_info())?;
    // Cgroup hooks are the ones with an effective-program query.
    let swap = update_pinned(pins, hook.name, query.is_some(), program.program_fd())?;
    if let Swap::Updated = swap {
        return verified(cgroup, hook, program_id, query, Some(LinkAction::Updated));
    }
    let link = program.attach_link(cgroup, pins.is_some())?;
    let action = match (pins, link) {
        (Some(pins), Some(link)) => {
            let replacing = match swap {
                Swap::Replace(why) => Some(why),
                Swap::Attach | Swap::Updated => None,
            };
            Some(pin_link(pins, hook.name, link, replacing)?)
        }
        _ => None,
    };
    verified(cgroup, hook, program_id, query, action)
}

/// What swapping a program into its pinned link gave.
enum Swap {
    /// Done: the pinned link runs the new program.
    Updated,
    /// Attach anew: no pins, or no pinned link for this hook.
    Attach,
    /// Attach anew and replace the pinned link.
    Replace(Replacing),
}

/// Why a pinned link is replaced rather than updated.
enum Replacing {
    /// Tracing links have no update in the kernel (EINVAL): expected.
    Tracing,
    /// A cgroup link the update failed on (why).
    NotUpdated(String),
}

/// Tries to swap `program` into the hook's pinned link; a tracing link
/// (`updatable` false) is not even tried.
fn update_pinned(
    pins: Option<&pins::PinDir>,
    hook: &str,
    updatable: bool,
    program: Result<&aya::programs::ProgramFd, ProgramError>,
) -> Result<Swap, Refusal> {
    let Some(pins) = pins else {
        return Ok(Swap::Attach);
    };
    let path = pins.link(hook);
    if !path.exists() {
        return Ok(Swap::Attach);
    }
    if !updatable {
        return Ok(Swap::Replace(Replacing::Tracing));
    }
    let program = program.map_err(|e| Refusal::plain(format!("program {hook} has no fd: {e}")))?;
    match pins::open_pinned(&path).and_then(|link| pins::update_link(link.as_fd(), program.as_fd()))
    {
        Ok(()) => Ok(Swap::Updated),
        Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => Ok(Swap::Replace(
            Replacing::NotUpdated("its cgroup is gone (ENOLINK)".to_string()),
        )),
        Err(e) => Ok(Swap::Replace(Replacing::NotUpdated(format!(
            "the kernel cannot update it ({})",
            errno_text(&e)
        )))),
    }
}

/// Pins a freshly attached link; an older pin of the hook (one that could
/// not be updated, `replacing` says why) is removed only once the new one
/// is in place.
fn pin_link(
    pins: &pins::PinDir,
    hook: &str,
    link: FdLink,
    replacing: Option<Replacing>,
) -> Result<LinkAction, Refusal> {
    let path = pins.link(hook);
    let replacing = replacing.filter(|_| path.exists());
    // A replacement is pinned beside the old link first: the hook is never
    // without one.
    let target = match replacing {
        Some(_) => pins.new_link(hook),
        None => path.clone(),
    };
    if replacing.is_some() {
        let _ = std::fs::remove_file(&target);
    }
    link.pin(&target).map_err(|e| {
        Refusal::plain(format!(
            "pinning the link at {}: {}",
            target.display(),
            with_sources(&e)
        ))
    })?;
    let Some(why) = replacing else {
        return Ok(LinkAction::Attached);
    };
    std::fs::remove_file(&path)
        .and_then(|()| std::fs::rename(&target, &path))
        .map_err(|e| {
            Refusal::plain(format!("replacing the pinned link {}: {e}", path.display()))
        })?;
    Ok(match why {
        Replacing::Tracing => LinkAction::Reattached,
        Replacing::NotUpdated(why) => LinkAction::Replaced(why),
    })
}

/// An error with its causes, which aya's pin errors keep apart (the errno
/// is in the source).
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn fd_link<L>(link: Result<L, ProgramError>) -> Result<FdLink, Refusal>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    let link = link.map_err(|e| Refusal::plain(format!("taking the link: {e}")))?;
    FdLink::try_from(link).map_err(|e| {
        Refusal::plain(format!(
            "the kernel attached it without a link, which cannot be pinned ({e}); service mode needs BPF links (Linux >= 5.7)"
        ))
    })
}

fn program_id(info: Result<aya::programs::ProgramInfo, ProgramError>) -> Result<u32, Refusal> {
    info.map(|info| info.id())
        .map_err(|e| Refusal::plain(format!("reading the program's id: {e}")))
}

/// A cgroup program counts as attached only if the kernel runs it on the
/// cgroup2 root (BPF_PROG_QUERY, effective programs): an attach call that
/// succeeded on a cgroup nobody is in would otherwise look healthy.
fn verified(
    cgroup: &File,
    hook: &Hook,
    program_id: u32,
    query: Option<u32>,
    action: Option<LinkAction>,
) -> Result<Option<LinkAction>, Refusal> {
    let Some(attach_type) = query else {
        return Ok(action);
    };
    match pins::effective_programs(cgroup.as_fd(), attach_type) {
        Ok(ids) if ids.contains(&program_id) => Ok(action),
        Ok(ids) => Err(Refusal::plain(format!(
            "attached, but not among the programs the kernel runs on the cgroup2 root for {} (program {program_id}; effective: {ids:?})",
            hook.name
        ))),
        Err(e) => Err(Refusal::failed(
            "checking it runs on the cgroup2 root",
            "BPF_PROG_QUERY",
            &e,
        )),
    }
}

/// Service mode: pinned maps must be what this build creates (aya reuses a
/// pin without checking). If any is not, every pin goes (links first, so
/// nothing runs against the removed maps) and the caller starts fresh;
/// returns why.
fn replace_incompatible_pins(
    pins: &pins::PinDir,
    ring_buffer_bytes: u32,
) -> Result<Option<String>, LoadError> {
    // Parsed only when there is a pinned map to compare with.
    let mut object = None;
    let mut mismatch = None;
    for name in pins::PINNED_MAPS {
        let path = pins.map(name);
        if !path.exists() {
            continue;
        }
        if object.is_none() {
            object = Some(
                aya_obj::Object::parse(OBJECT)
                    .map_err(|e| LoadError(format!("parsing the eBPF object: {e}")))?,
            );
        }
        let expected = object
            .as_ref()
            .expect("parsed above")
            .maps
            .get(name)
            .ok_or_else(|| LoadError(format!("the eBPF object has no map {name}")))?;
        let max_entries = if name == "EVENTS" {
            ring_buffer_bytes
        } else {
            expected.max_entries()
        };
        let want = (
            expected.map_type(),
            expected.key_size(),
            expected.value_size(),
            max_entries,
        );
        let have = MapInfo::from_pin(&path).map(|info| {
            (
                info.map_type().map_or(u32::MAX, |t| t as u32),
                info.key_size(),
                info.value_size(),
                info.max_entries(),
            )
        });
        match have {
            Ok(have) if have == want => {}
            Ok(have) => {
                mismatch = Some(format!(
                    "the pinned map {name} is not what this build uses (type, key, value, entries: {have:?}, wanted {want:?}{})",
                    if name == "EVENTS" {
                        "; a changed --ring-buffer-bytes does this"
                    } else {
                        ""
                    }
                ));
                break;
            }
            Err(e) => {
                mismatch = Some(format!("the pinned map {name} cannot be read ({e})"));
                break;
            }
        }
    }
    // Links without maps (a half-removed dir) cannot be adopted either.
    if mismatch.is_none() && !pins.map("EVENTS").exists() && pins.has_pins() {
        mismatch = Some("the pin dir has links but no ring buffer".to_string());
    }
    if mismatch.is_some() {
        pins.remove_all().map_err(|e| LoadError(e.to_string()))?;
    }
    Ok(mismatch)
}

/// This boot's id (a random UUID per boot): with a map id, it names one
/// ring buffer for its whole life.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-boot".to_string())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, Refusal>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| Refusal::plain(format!("the eBPF object has no program {name}")))?;
    program
        .try_into()
        .map_err(|e| Refusal::plain(format!("program {name} has an unexpected type: {e}")))
}

/// "EPERM (Operation not permitted)": the errno's name and the libc text.
fn errno_text(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => format!(
            "{} ({})",
            errno_name(code),
            io::Error::from_raw_os_error(code)
        )
        .replace(&format!(" (os error {code})"), ""),
        None => error.to_string(),
    }
}

fn errno_name(code: i32) -> &'static str {
    match code {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::E2BIG => "E2BIG",
        libc::ENOSPC => "ENOSPC",
        libc::ENOMEM => "ENOMEM",
        libc::ENOENT => "ENOENT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        // The kernel-internal ENOTSUPP, which some BPF paths return as is.
        524 => "ENOTSUPP",
        libc::ENOSYS => "ENOSYS",
        libc::EBADF => "EBADF",
        libc::EFAULT => "EFAULT",
        _ => "errno",
    }
}

/// The error when no program that sees attempts could be attached: each
/// refusal in one line, then the verifier logs in full.
fn nothing_attached(missing: &[MissingHook], kernel: &str) -> String {
    let mut text = format!(
        "no kernel program that sees registry attempts could be attached on kernel {kernel}:"
    );
    for hook in missing {
        text.push_str(&format!("\n  {}: {}", hook.hook, hook.reason));
    }
    if missing.iter().any(|hook| hook.permission_denied) {
        text.push_str(
            "\nrun as root with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN (CAP_SYS_ADMIN alone on kernels before 5.8)",
        );
    }
    for hook in missing {
        if let Some(log) = &hook.verifier_log {
            text.push_str(&format!(
                "\n--- verifier log of {} ---\n{}",
                hook.hook,
                log.trim_end()
            ));
        }
    }
    text
}

fn is_permission(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

/// The object could not even be loaded (its maps created): say which map
/// or step, and what this kernel lacks, from a probe rather than a guess.
fn explain_object_error(error: &EbpfError, kernel: &str) -> String {
    let errno = match error {
        EbpfError::MapError(MapError::CreateError { io_error, .. }) => io_error.raw_os_error(),
        EbpfError::MapError(MapError::SyscallError(SyscallError { io_error, .. })) => {
            io_error.raw_os_error()
        }
        _ => None,
    };
    if matches!(errno, Some(libc::EPERM) | Some(libc::EACCES)) {
        return format!(
            "the kernel refused to create the observer's BPF maps ({}): run as root with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN ({error})",
            errno_name(errno.unwrap_or_default())
        );
    }
    if let EbpfError::MapError(MapError::CreateError { name, .. }) = error
        && name == "EVENTS"
        && !is_map_supported(MapType::RingBuf).unwrap_or(true)
    {
        return format!(
            "kernel {kernel} has no BPF ring buffer (BPF_MAP_TYPE_RINGBUF, Linux >= 5.8), which every event goes through ({error})"
        );
    }
    if errno == Some(libc::ENOSYS) {
        return format!(
            "kernel {kernel} has no bpf() system call (CONFIG_BPF_SYSCALL is off) ({error})"
        );
    }
    format!("loading the eBPF object failed on kernel {kernel}: {error}")
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "(unknown release)".to_string())
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
/// RLIMIT_MEMLOCK; older ones (5.10) need it raised. Without
/// CAP_SYS_RESOURCE the raise fails, which is harmless on the newer kernels.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to a local rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_mask_names_programs_and_rejects_others() {
        assert_eq!(refusal_mask(&[]).unwrap(), 0);
        let mask = refusal_mask(&["connect4".into(), "skb_ingress".into()]).unwrap();
        assert_eq!(
            mask,
            1 << program_index("connect4") | 1 << program_index("skb_ingress")
        );
        let error = refusal_mask(&["connect5".into()]).unwrap_err().to_string();
        assert!(
            error.contains("\"connect5\"") && error.contains("sock_state"),
            "{error}"
        );
    }

    #[test]
    fn errno_text_names_the_errno() {
        assert_eq!(
            errno_text(&io::Error::from_raw_os_error(libc::EINVAL)),
            "EINVAL (Invalid argument)"
        );
        assert_eq!(
            errno_text(&io::Error::from_raw_os_error(libc::EPERM)),
            "EPERM (Operation not permitted)"
        );
    }

    #[test]
    fn nothing_attached_names_each_program_and_shows_logs() {
        let missing = vec![
            MissingHook {
                hook: "connect4",
                reason: "the verifier refused it: unknown func bpf_x#1 (EINVAL (Invalid argument))"
                    .into(),
                evidence: "",
                verifier_log: Some("0: R1=ctx() R10=fp0\nunknown func bpf_x#1\n".into()),
                permission_denied: false,
            },
            MissingHook {
                hook: "skb_egress",
                reason: "loading failed: bpf_prog_load: EPERM (Operation not permitted)".into(),
                evidence: "",
                verifier_log: None,
                permission_denied: true,
            },
        ];
        let text = nothing_attached(&missing, "6.1.0-57-amd64");
        assert!(text.starts_with(
            "no kernel program that sees registry attempts could be attached on kernel 6.1.0-57-amd64:\n  connect4: the verifier refused it: unknown func bpf_x#1"
        ), "{text}");
        assert!(text.contains("\n  skb_egress: loading failed"), "{text}");
        assert!(text.contains("run as root with CAP_BPF"), "{text}");
        // A verifier refusal (EACCES too) is no privilege problem.
        let refused_only = nothing_attached(&missing[..1], "6.1.0-57-amd64");
        assert!(!refused_only.contains("run as root"), "{refused_only}");
        assert!(
            text.ends_with(
                "--- verifier log of connect4 ---\n0: R1=ctx() R10=fp0\nunknown func bpf_x#1"
            ),
            "{text}"
        );
    }

    #[test]
    fn every_program_has_an_evidence_text() {
        for hook in &HOOKS {
            assert!(!hook.evidence.is_empty(), "{}", hook.name);
        }
        assert!(HOOKS.iter().any(|h| h.sees_attempts));
    }
}
