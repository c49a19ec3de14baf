//! systemd's notify protocol (sd_notify(3)), for `Type=notify` units:
//! `READY=1` once every hook is attached and the pipeline runs, `WATCHDOG=1`
//! only while the pipeline answers, `STOPPING=1` when the agent stops.
//!
//! The protocol is one datagram per message to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace); a
//! dozen lines, so no crate for it. Without `$NOTIFY_SOCKET` (not under
//! systemd) every call does nothing.

use std::{
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
    time::Duration,
};

/// The notify socket of the service manager, if there is one.
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
}

/// Where `$NOTIFY_SOCKET` points.
pub fn address(value: &str) -> io::Result<SocketAddr> {
    match value.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(value),
    }
}

impl Notifier {
    /// From the environment: None outside a notify-type service.
    pub fn from_env() -> Option<Notifier> {
        let value = std::env::var("NOTIFY_SOCKET").ok()?;
        let address = address(&value).ok()?;
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, address })
    }

    /// Sends one message (`KEY=value` lines). A manager that went away is
    /// no reason to fail the agent: the error is returned for the caller
    /// to ignore or say.
    pub fn send(&self, message: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.address)
            .map(|_| ())
    }
}

/// The watchdog interval the manager asked for (`$WATCHDOG_USEC`, for this
/// process if `$WATCHDOG_PID` says so): pings go at half of it.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.parse().ok().filter(|usec| *usec > 0)?;
    Some(Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let manager = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            address: address(path.to_str().unwrap()).unwrap(),
        };
        notifier.send("READY=1\nSTATUS=observing").unwrap();
        let mut buffer = [0u8; 64];
        let n = manager.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\nSTATUS=observing");
    }

    #[test]
    fn an_abstract_address_is_told_apart_from_a_path() {
        let abstract_address = address("@/org/freedesktop/systemd1/notify/42").unwrap();
        assert!(abstract_address.as_pathname().is_none());
        let path = address("/run/systemd/notify").unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
    }

    #[test]
    fn the_watchdog_pings_at_half_the_interval_and_only_for_this_process() {
        assert_eq!(
            watchdog_interval(Some("20000000"), None, 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            watchdog_interval(Some("20000000"), Some("7"), 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(watchdog_interval(Some("20000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
    }
}
