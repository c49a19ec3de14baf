//! Reading the kernel verifier's log: the one line that says why a program
//! was refused, out of a log that can run to thousands of lines of
//! instruction and register dumps.

/// The line that states the refusal: the last line of the log that is
/// neither a statistics line the kernel appends after every verdict, nor an
/// instruction, register state or source line of the walk.
pub fn key_line(log: &str) -> Option<&str> {
    log.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty() && !is_statistics(line) && !is_walk(line))
}

/// Lines appended after the verdict (kernel/bpf/verifier.c, print_verification_stats).
fn is_statistics(line: &str) -> bool {
    line.starts_with("processed ")
        || line.starts_with("verification time ")
        || line.starts_with("stack depth ")
        || line.starts_with("-- END PROG LOAD LOG --")
}

/// Lines of the verifier's walk: `12: (85) call ...`, `12: R0=...`,
/// `; source line`, `from 3 to 7: ...`, `last_idx ...`, `func#0 @0`.
fn is_walk(line: &str) -> bool {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0 && line[digits..].starts_with(':'))
        || line.starts_with("; ")
        || line.starts_with("from ")
        || line.starts_with("last_idx ")
        || line.starts_with("func#")
        || line.starts_with("regs=")
        || line.starts_with("parent ")
}

#[cfg(test)]
mod tests {
    use super::key_line;

    #[test]
    fn finds_the_refusal_before_the_statistics() {
        let log = "func#0 @0\n0: R1=ctx(off=0,imm=0) R10=fp0\n; let pid_tgid = bpf_get_current_pid_tgid();\n\
                   14: (85) call bpf_get_current_pid_tgid#14\nunknown func bpf_get_current_pid_tgid#14\n\
                   processed 23 insns (limit 1000000) max_states_per_insn 0 total_states 1 peak_states 1 mark_read 0\n";
        assert_eq!(
            key_line(log),
            Some("unknown func bpf_get_current_pid_tgid#14")
        );
    }

    #[test]
    fn a_walk_only_log_has_no_key_line() {
        assert_eq!(key_line("0: R1=ctx() R10=fp0\n"), None);
        assert_eq!(key_line(""), None);
    }

    #[test]
    fn context_access_refusal() {
        let log = "0: R1=ctx() R10=fp0\n; unsafe { core::ptr::read_volatile(...) }\n\
                   3: (61) r1 = *(u32 *)(r1 +4093)\ninvalid bpf_context access off=4093 size=4\n\
                   processed 4 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n";
        assert_eq!(
            key_line(log),
            Some("invalid bpf_context access off=4093 size=4")
        );
    }
}
