//! Kernel struct field offsets for the tracing programs, read from the
//! running kernel's BTF.
//!
//! aya's Rust programs cannot carry CO-RE relocations, and struct layouts
//! differ between kernel builds (task_struct most of all). The agent looks
//! the fields up in /sys/kernel/btf/vmlinux at start-up and hands the
//! offsets to the programs as a global ([`KernelOffsets`]).

use std::path::Path;

use btfparse::{Offset, Readable, TypeInformation};
use observer_common::KernelOffsets;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The fields the programs read, as (struct, member path).
const FIELDS: [(&str, &str); 10] = [
    ("task_struct", "pid"),
    ("task_struct", "tgid"),
    ("task_struct", "real_parent"),
    ("task_struct", "start_boottime"),
    ("task_struct", "mm"),
    ("mm_struct", "arg_start"),
    ("mm_struct", "arg_end"),
    ("linux_binprm", "filename"),
    ("sock", "sk_err"),
    // sk_cookie, set by the connect hook's bpf_get_socket_cookie: tracing
    // programs may call that helper only from 5.12 on, so they read it.
    ("sock", "__sk_common.skc_cookie"),
];

struct Bytes<'a>(&'a [u8]);

impl Readable for Bytes<'_> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match self
            .0
            .get(start..)
            .and_then(|rest| rest.get(..buffer.len()))
        {
            Some(bytes) => {
                buffer.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::IOError,
                "read past the end of the BTF data",
            )),
        }
    }
}

/// Reads the offsets from a BTF file; the error names the missing field.
pub fn read(btf_path: &Path) -> anyhow::Result<KernelOffsets> {
    let data = std::fs::read(btf_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", btf_path.display()))?;
    from_btf(&data).map_err(|e| anyhow::anyhow!("{}: {e}", btf_path.display()))
}

/// Pure: BTF bytes in, offsets out.
pub fn from_btf(data: &[u8]) -> anyhow::Result<KernelOffsets> {
    let types =
        TypeInformation::new(&Bytes(data)).map_err(|e| anyhow::anyhow!("not valid BTF: {e:?}"))?;
    let mut found = [0u32; FIELDS.len()];
    for (slot, (structure, member)) in found.iter_mut().zip(FIELDS) {
        let id = types
            .id_of(structure)
            .ok_or_else(|| anyhow::anyhow!("the kernel's BTF has no struct {structure}"))?;
        let (_, offset) = types
            .offset_of(id, member)
            .map_err(|e| anyhow::anyhow!("struct {structure} has no field {member}: {e:?}"))?;
        *slot = match offset {
            Offset::ByteOffset(bytes) => bytes,
            Offset::BitOffsetAndSize(..) => {
                anyhow::bail!("{structure}.{member} is a bit field")
            }
        };
    }
    let [
        task_pid,
        task_tgid,
        task_real_parent,
        task_start_boottime,
        task_mm,
        mm_arg_start,
        mm_arg_end,
        binprm_filename,
        sock_err,
        sock_cookie,
    ] = found;
    Ok(KernelOffsets {
        valid: 1,
        task_pid,
        task_tgid,
        task_real_parent,
        task_start_boottime,
        task_mm,
        mm_arg_start,
        mm_arg_end,
        binprm_filename,
        sock_err,
        sock_cookie,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF: every field is found, and the offsets are
    /// plausible (inside the struct, distinct, the two argv bounds adjacent).
    #[test]
    fn finds_every_field_in_this_kernels_btf() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            // Build containers without BTF: the privileged tests (which
            // require it) load the programs for real.
            assert!(std::env::var_os("CI").is_none(), "CI machines have BTF");
            return;
        }
        let offsets = read(path).unwrap();
        assert_eq!(offsets.valid, 1);
        assert_ne!(offsets.task_pid, offsets.task_tgid);
        assert_eq!(
            offsets.task_tgid,
            offsets.task_pid + 4,
            "pid_t pid; pid_t tgid;"
        );
        assert_eq!(offsets.mm_arg_end, offsets.mm_arg_start + 8);
        assert!(offsets.task_start_boottime > 0 && offsets.task_mm > 0);
        assert!(offsets.sock_cookie > 0 && offsets.sock_cookie != offsets.sock_err);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(from_btf(&[]).is_err());
        assert!(from_btf(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        assert!(from_btf(&[0u8; 64]).is_err());
    }
}
