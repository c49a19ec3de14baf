//! The serving certificate: loaded from PEM files, checked as a pair, and
//! reloaded when the files change (cert-manager and OpenShift's service CA
//! rotate them in the mounted Secret). A broken new pair never replaces a
//! working one.

use std::{
    fmt,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// How often the files are looked at. Kubernetes updates a mounted Secret
/// within about a minute of a change; 2 s adds nothing noticeable.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The files named by `--cert` and `--key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a pair cannot be served; the text names the file and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PairError(pub String);

/// The crypto provider everything here uses (see observer/Cargo.toml).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks a pair: at least one certificate, one private key the
/// provider can sign with, and the key matching the first certificate.
pub fn load_pair(paths: &PairPaths, provider: &CryptoProvider) -> Result<CertifiedKey, PairError> {
    let cert = paths.cert.display();
    let key = paths.key.display();
    let chain = read_certificates(&paths.cert)?;
    let private_key = PrivateKeyDer::from_pem_file(&paths.key).map_err(|e| {
        PairError(match e {
            rustls::pki_types::pem::Error::NoItemsFound => format!(
                "{key} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC); \
                 give --key the private key of the certificate (tls.key in a TLS Secret)"
            ),
            other => format!(
                "cannot read the private key {key}: {other}; give --key a readable PEM \
                 private key (tls.key in a TLS Secret)"
            ),
        })
    })?;
    CertifiedKey::from_der(chain, private_key, provider).map_err(|e| {
        PairError(match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the private key {key} does not belong to the certificate {cert}; give --cert \
                 and --key the two halves of one pair (tls.crt and tls.key of one Secret)"
            ),
            other => format!(
                "the private key {key} cannot be used with the certificate {cert}: {other}; \
                 use an RSA, ECDSA (P-256, P-384) or Ed25519 key"
            ),
        })
    })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PairError> {
    let cert = path.display();
    let unreadable = |e: rustls::pki_types::pem::Error| {
        PairError(format!(
            "cannot read the certificate {cert}: {e}; give --cert a readable PEM file \
             (tls.crt in a TLS Secret)"
        ))
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(unreadable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    if chain.is_empty() {
        return Err(PairError(format!(
            "{cert} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give --cert the \
             server certificate, followed by its intermediates if any (tls.crt in a TLS Secret)"
        )));
    }
    Ok(chain)
}

/// The pair handshakes use now; swapped whole by a reload.
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    pub fn new(pair: CertifiedKey) -> CertStore {
        CertStore {
            current: RwLock::new(Arc::new(pair)),
        }
    }

    fn replace(&self, pair: CertifiedKey) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// What identifies a version of a file without reading it: a replaced file
/// (a rename, or a Secret volume's symlink swap) has a new inode; a
/// rewritten one a new mtime or size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    size: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    // metadata() follows symlinks: Secret volumes link tls.crt to ..data/.
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: meta.dev(),
        ino: meta.ino(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        size: meta.len(),
    })
}

/// What a poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The files changed and the new pair is served.
    Reloaded,
    /// The files changed but the new pair is broken; the old one is still
    /// served. Tried again when the files change again.
    Failed(PairError),
}

/// Notices changed files and reloads the pair into a [`CertStore`].
pub struct Watcher {
    paths: PairPaths,
    provider: Arc<CryptoProvider>,
    /// The stamps of the last version tried, good or bad: a broken pair is
    /// reported once, not every poll.
    seen: (Option<FileStamp>, Option<FileStamp>),
}

impl Watcher {
    /// Call right after the pair in `paths` was loaded at start.
    pub fn new(paths: PairPaths, provider: Arc<CryptoProvider>) -> Watcher {
        let seen = (stamp(&paths.cert), stamp(&paths.key));
        Watcher {
            paths,
            provider,
            seen,
        }
    }

    /// Looks at the files once; `None` when they did not change.
    pub fn poll(&mut self, store: &CertStore) -> Option<Reload> {
        let now = (stamp(&self.paths.cert), stamp(&self.paths.key));
        if now == self.seen {
            return None;
        }
        self.seen = now;
        Some(match load_pair(&self.paths, &self.provider) {
            Ok(pair) => {
                store.replace(pair);
                Reload::Reloaded
            }
            Err(error) => Reload::Failed(error),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// A self-signed EC pair made by the openssl CLI (a real tool, as an
    /// operator would use), CN `name`.
    fn make_pair(dir: &Path, name: &str) -> PairPaths {
        let paths = PairPaths {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        let status = Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "1", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&paths.key)
            .arg("-out")
            .arg(&paths.cert)
            .output()
            .expect("openssl runs (package openssl, installed by cargo xtask setup)");
        assert!(status.status.success(), "{status:?}");
        paths
    }

    fn served(store: &CertStore) -> Vec<u8> {
        store.current.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn loads_a_pair_and_names_the_file_that_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let good = make_pair(dir.path(), "a");
        let other = make_pair(dir.path(), "b");
        let provider = provider();
        let pair = load_pair(&good, &provider).unwrap();
        assert_eq!(pair.cert.len(), 1);

        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "not a key\n").unwrap();
        let missing = dir.path().join("missing.crt");
        for (paths, needles) in [
            (
                PairPaths {
                    cert: good.cert.clone(),
                    key: garbage.clone(),
                },
                vec![
                    garbage.display().to_string(),
                    "no PEM private key".into(),
                    "--key".into(),
                ],
            ),
            (
                PairPaths {
                    cert: garbage.clone(),
                    key: good.key.clone(),
                },
                vec![
                    garbage.display().to_string(),
                    "no PEM certificate".into(),
                    "--cert".into(),
                ],
            ),
            (
                PairPaths {
                    cert: missing.clone(),
                    key: good.key.clone(),
                },
                vec![missing.display().to_string(), "cannot read".into()],
            ),
            (
                PairPaths {
                    cert: good.cert.clone(),
                    key: other.key.clone(),
                },
                vec![
                    other.key.display().to_string(),
                    good.cert.display().to_string(),
                    "does not belong".into(),
                ],
            ),
            (
                // A certificate where the key should be.
                PairPaths {
                    cert: good.cert.clone(),
                    key: good.cert.clone(),
                },
                vec![good.cert.display().to_string(), "no PEM private key".into()],
            ),
        ] {
            let error = load_pair(&paths, &provider).unwrap_err().0;
            for needle in needles {
                assert!(error.contains(&needle), "{paths:?}: {error} lacks {needle}");
            }
        }
    }

    #[test]
    fn reloads_changed_files_and_keeps_the_old_pair_when_the_new_one_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let live = PairPaths {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        let first = make_pair(dir.path(), "first");
        let second = make_pair(dir.path(), "second");
        // Replaced as a rotation does it: a new file renamed over the old.
        let install = |from: &Path, to: &Path| {
            let staging = to.with_extension("new");
            std::fs::copy(from, &staging).unwrap();
            std::fs::rename(&staging, to).unwrap();
        };
        install(&first.cert, &live.cert);
        install(&first.key, &live.key);
        let provider = provider();
        let store = CertStore::new(load_pair(&live, &provider).unwrap());
        let first_der = served(&store);
        let mut watcher = Watcher::new(live.clone(), Arc::clone(&provider));
        assert_eq!(watcher.poll(&store), None, "nothing changed");

        // Half a rotation: the new certificate with the old key.
        install(&second.cert, &live.cert);
        let Some(Reload::Failed(error)) = watcher.poll(&store) else {
            panic!("a mismatched pair must fail")
        };
        assert!(error.0.contains("does not belong"), "{error}");
        assert_eq!(served(&store), first_der, "the old pair is still served");
        assert_eq!(watcher.poll(&store), None, "a failure is reported once");

        install(&second.key, &live.key);
        assert_eq!(watcher.poll(&store), Some(Reload::Reloaded));
        assert_ne!(served(&store), first_der);
        assert_eq!(
            served(&store),
            load_pair(&second, &provider).unwrap().cert[0].to_vec()
        );

        // Files removed mid-rotation: a failure, the pair stays.
        std::fs::remove_file(&live.key).unwrap();
        assert!(matches!(watcher.poll(&store), Some(Reload::Failed(_))));
        assert_eq!(
            served(&store),
            load_pair(&second, &provider).unwrap().cert[0].to_vec()
        );
    }
}
