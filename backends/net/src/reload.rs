//! Certificate rotation without a restart: the node's certificate, key and CA files are read
//! again when they change, checked, and handed to every listener through a [`TlsSource`].
//!
//! The [`CertReloader`] polls the three files every interval (default
//! [`DEFAULT_RELOAD_INTERVAL`], `[tls] reload_interval`): it reads them whole and compares a
//! SHA-256 of their contents with what it last saw, so a change is found whatever the file
//! system does with modification times. A change is acted on once the files have stayed the
//! same for one more interval, so a rotation that writes the certificate and then the key is not
//! judged half-way. The new material must pass what a node checks at start
//! ([`TlsIdentity::check`]: it parses, names this node, the key matches, now is inside its
//! validity) and chain to the CA in the (possibly new) CA file ([`TlsIdentity::check_chain`]).
//!
//! * Applied: every listener builds its configuration from it for new handshakes; connections
//!   already open keep the keys they negotiated. `mesh_transport_cert_reloads_total{result="ok"}`
//!   rises and `mesh_transport_cert_expiry_timestamp_seconds` follows the new certificate.
//! * Refused: the node keeps serving the material it had, logs one `warn` line naming the file
//!   and the reason, and counts `mesh_transport_cert_reloads_total{result="error"}`. The same
//!   refused contents are not judged again; the next change is.
//!
//! # A stand-in certificate
//!
//! A `certificate-expiry` chaos experiment makes the node serve another certificate for a
//! while ([`CertReloader::with_stand_in`]): an expired one, or one about to expire, that the
//! operator provides (a node holds no CA key to mint one). Every identity this reloader
//! publishes carries the stand-in and its switch ([`TlsIdentity::with_stand_in`]), and the
//! listeners' certificate resolvers read the switch at each handshake: once the experiment has
//! raised it (and reports itself active), new handshakes get the stand-in, with no task in
//! between to lag behind. `mesh_transport_cert_expiry_timestamp_seconds` shows the stand-in's
//! expiry while it is served ([`TlsStats`] reads the same switch at each scrape); a rotation of
//! the files meanwhile is judged and published as usual, and served once the stand-in ends.
//!
//! Why polling: three small files every two seconds cost microseconds, work on every file
//! system (including Kubernetes secret volumes, whose atomic symlink swaps inotify watchers
//! miss), and need no new dependency.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshkit::NodeId;
use ring::digest::{Context as Digest, SHA256};
use tokio::sync::watch;

use crate::tls::{TlsError, TlsFiles, TlsIdentity};
use crate::tls_stats::TlsStats;

/// How often the TLS files are checked for a change, unless `[tls] reload_interval` says
/// otherwise.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The TLS identity a listener should use now, and a way to wait for the next one.
///
/// Cloning is cheap; each clone sees every change once. A source made with
/// [`TlsSource::fixed`] never changes.
#[derive(Clone, Debug)]
pub struct TlsSource {
    current: watch::Receiver<Arc<TlsIdentity>>,
}

impl TlsSource {
    /// A source that always gives `identity`.
    pub fn fixed(identity: TlsIdentity) -> Self {
        // The sender is dropped at once: `changed` then reports that nothing will change.
        let (_, current) = watch::channel(Arc::new(identity));
        Self { current }
    }

    /// The identity to use now.
    pub fn current(&self) -> Arc<TlsIdentity> {
        self.current.borrow().clone()
    }

    /// Waits for the next identity; `None` once no reloader feeds this source (it stays
    /// [`TlsSource::current`] for good).
    pub async fn changed(&mut self) -> Option<Arc<TlsIdentity>> {
        self.current.changed().await.ok()?;
        Some(self.current.borrow_and_update().clone())
    }
}

/// What one [`CertReloader::poll`] did.
#[derive(Debug)]
#[non_exhaustive]
pub enum PollOutcome {
    /// The files hold what is in use, or what was already refused.
    Unchanged,
    /// The files changed since the last poll: judged once they stay the same for one poll.
    Settling,
    /// New material was applied.
    Applied,
    /// New material was refused; the previous one stays in use.
    Refused(TlsError),
}

/// A SHA-256 of the three files' contents (or of the error reading one).
type Fingerprint = [u8; 32];

/// Watches a node's TLS files and publishes each good change to its [`TlsSource`]s. Run it with
/// [`CertReloader::run`], or drive it with [`CertReloader::poll`].
#[derive(Debug)]
pub struct CertReloader {
    files: TlsFiles,
    node: NodeId,
    stats: Arc<TlsStats>,
    publish: watch::Sender<Arc<TlsIdentity>>,
    /// The identity from the files (without the stand-in; [`CertReloader::published`] adds it).
    own: Arc<TlsIdentity>,
    stand_in: Option<StandIn>,
    applied: Fingerprint,
    refused: Option<Fingerprint>,
    last_seen: Option<Fingerprint>,
}

impl CertReloader {
    /// A reloader for the files `identity` was loaded from, publishing to the returned source.
    /// The files are read again now to fingerprint what is in use; if they already differ from
    /// `identity`, the first polls treat that as a change.
    pub fn new(identity: TlsIdentity, stats: Arc<TlsStats>) -> (Self, TlsSource) {
        let files = identity.files().clone();
        let node = identity.id();
        if let Some(not_after) = identity.not_after_unix() {
            stats.set_cert_not_after(not_after);
        }
        let applied = read_files(&files).0;
        let own = Arc::new(identity);
        let (publish, current) = watch::channel(own.clone());
        let reloader = Self {
            files,
            node,
            stats,
            publish,
            own,
            stand_in: None,
            applied,
            refused: None,
            last_seen: Some(applied),
        };
        (reloader, TlsSource { current })
    }

    /// Reads the files once and applies or refuses a change that has settled (see the module
    /// docs). `now` is the time validity is checked at.
    pub fn poll(&mut self, now: SystemTime) -> PollOutcome {
        let (fingerprint, contents) = read_files(&self.files);
        if fingerprint == self.applied || Some(fingerprint) == self.refused {
            self.last_seen = Some(fingerprint);
            return PollOutcome::Unchanged;
        }
        if self.last_seen.replace(fingerprint) != Some(fingerprint) {
            return PollOutcome::Settling;
        }
        let judged = contents.and_then(|[cert, key, ca]| {
            let identity = TlsIdentity::from_pem(&self.files, &cert, &key, &ca)?;
            identity.check(Some(self.node), now)?;
            identity.check_chain(now)?;
            Ok(identity)
        });
        match judged {
            Ok(identity) => {
                let not_after = identity.not_after_unix().unwrap_or(i64::MAX);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    serial = %hex(&identity.serial()),
                    not_after = %crate::tls::rfc3339(not_after),
                    "TLS certificate reloaded; new handshakes use it"
                );
                self.applied = fingerprint;
                self.refused = None;
                self.own = Arc::new(identity);
                self.stats.count_reload_ok(not_after);
                // While a stand-in is served the listeners keep presenting it (they read its
                // switch) and the expiry metric keeps showing it (TlsStats reads the switch too).
                self.publish.send_replace(self.published());
                PollOutcome::Applied
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    "TLS reload refused; the node keeps serving its previous certificate"
                );
                self.refused = Some(fingerprint);
                self.stats.count_reload_failed();
                PollOutcome::Refused(error)
            }
        }
    }

    /// Serves `identity` in place of the files' while `serve` holds `true` (see the module
    /// docs). The caller checks the stand-in first ([`TlsIdentity::check_stand_in`]).
    pub fn with_stand_in(mut self, identity: TlsIdentity, serve: watch::Receiver<bool>) -> Self {
        self.stats
            .set_stand_in(not_after_of(&identity), serve.clone());
        self.stand_in = Some(StandIn {
            identity: Arc::new(identity),
            serve,
            served: false,
        });
        self.publish.send_replace(self.published());
        self.follow_stand_in();
        self
    }

    /// The identity the listeners get: the files', carrying the stand-in and its switch while
    /// there is one.
    fn published(&self) -> Arc<TlsIdentity> {
        match &self.stand_in {
            Some(s) => Arc::new(
                TlsIdentity::clone(&self.own)
                    .with_stand_in(TlsIdentity::clone(&s.identity), s.serve.clone()),
            ),
            None => self.own.clone(),
        }
    }

    /// Logs the switch's changes (the listeners and the expiry metric read the switch
    /// themselves, at each handshake and each scrape).
    fn follow_stand_in(&mut self) {
        let Some(stand_in) = &mut self.stand_in else {
            return;
        };
        let serve = *stand_in.serve.borrow_and_update();
        if serve == stand_in.served {
            return;
        }
        stand_in.served = serve;
        if serve {
            tracing::warn!(
                not_after = %crate::tls::rfc3339(not_after_of(&stand_in.identity)),
                "chaos: new handshakes get the stand-in certificate"
            );
        } else {
            tracing::info!("chaos: new handshakes get the node's own certificate again");
        }
    }

    /// Stops serving the stand-in for good (its switch is gone: the driver ended): the
    /// listeners get the files' identity alone.
    fn end_stand_in(&mut self) {
        if self.stand_in.take().is_some() {
            self.publish.send_replace(self.own.clone());
        }
    }

    /// Polls the files every `interval` (never with `None`: reloading is off) and follows the
    /// stand-in switch, until every [`TlsSource`] fed by this reloader is dropped.
    pub async fn run(mut self, interval: Option<Duration>) {
        // Reloading off: a tick that never comes.
        let mut ticks = tokio::time::interval(interval.unwrap_or(Duration::MAX));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.reset();
        loop {
            let stand_in_changed = async {
                match &mut self.stand_in {
                    Some(s) => s.serve.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.publish.closed() => return,
                _ = ticks.tick(), if interval.is_some() => {
                    // Three small files: reading them on the runtime costs microseconds.
                    let _ = self.poll(SystemTime::now());
                }
                open = stand_in_changed => {
                    if open {
                        self.follow_stand_in();
                    } else {
                        self.end_stand_in();
                    }
                }
            }
        }
    }
}

fn not_after_of(identity: &TlsIdentity) -> i64 {
    identity.not_after_unix().unwrap_or(i64::MAX)
}

/// A certificate served in place of the node's own while `serve` holds `true`.
#[derive(Debug)]
struct StandIn {
    identity: Arc<TlsIdentity>,
    serve: watch::Receiver<bool>,
    /// Whether the switch was on when last looked at (for the log).
    served: bool,
}

/// The three files' contents and their fingerprint; an unreadable file makes the contents an
/// error and puts the error's kind into the fingerprint (so a file that stays missing is
/// judged, and refused, once).
fn read_files(files: &TlsFiles) -> (Fingerprint, Result<[Vec<u8>; 3], TlsError>) {
    let mut digest = Digest::new(&SHA256);
    let mut contents = Vec::with_capacity(3);
    let mut failure = None;
    for path in files.paths() {
        match std::fs::read(path) {
            Ok(bytes) => {
                digest.update(&(bytes.len() as u64).to_be_bytes());
                digest.update(&bytes);
                contents.push(bytes);
            }
            Err(source) => {
                digest.update(&u64::MAX.to_be_bytes());
                digest.update(format!("{:?}", source.kind()).as_bytes());
                failure.get_or_insert_with(|| read_error(path, source));
            }
        }
    }
    let mut fingerprint = [0; 32];
    fingerprint.copy_from_slice(digest.finish().as_ref());
    let contents = match failure {
        Some(error) => Err(error),
        None => contents
            .try_into()
            .map_err(|_| unreachable_read_error(&files.cert)),
    };
    (fingerprint, contents)
}

fn read_error(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Read {
        path: path.to_owned(),
        source,
    }
}

/// Three paths read without error give three contents; kept as an error, not a panic.
fn unreachable_read_error(path: &Path) -> TlsError {
    read_error(path, std::io::Error::other("file count mismatch"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::DevCa;

    struct Dir(std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn files(name: &str) -> (Dir, TlsFiles) {
        let dir =
            std::env::temp_dir().join(format!("meshkit-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles {
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
            ca: dir.join("ca.pem"),
        };
        (Dir(dir), files)
    }

    fn write(files: &TlsFiles, ca: &DevCa, validity: Option<(SystemTime, SystemTime)>) {
        let issued = match validity {
            None => ca.issue_node(NodeId::new(1)),
            Some((from, until)) => ca.issue_node_valid(NodeId::new(1), from, until),
        }
        .unwrap();
        std::fs::write(&files.cert, issued.cert_pem).unwrap();
        std::fs::write(&files.key, issued.key_pem).unwrap();
        std::fs::write(&files.ca, ca.cert_pem()).unwrap();
    }

    /// Polls until the outcome is not `Settling`, at most three times.
    fn settle(reloader: &mut CertReloader) -> PollOutcome {
        for _ in 0..3 {
            match reloader.poll(SystemTime::now()) {
                PollOutcome::Settling => {}
                outcome => return outcome,
            }
        }
        panic!("a change did not settle in three polls");
    }

    #[test]
    fn good_changes_apply_and_bad_ones_keep_the_previous_material() {
        let (_dir, files) = files("unit");
        let ca = DevCa::generate("reload CA").unwrap();
        write(&files, &ca, None);
        let identity = TlsIdentity::load(&files.cert, &files.key, &files.ca).unwrap();
        let stats = Arc::new(TlsStats::default());
        let (mut reloader, source) = CertReloader::new(identity, stats.clone());
        let first = source.current().serial();
        assert!(matches!(
            reloader.poll(SystemTime::now()),
            PollOutcome::Unchanged
        ));

        // A new certificate from the same CA: applied after one settling poll.
        let now = SystemTime::now();
        let until = now + Duration::from_secs(86_400 * 30);
        write(&files, &ca, Some((now - Duration::from_secs(60), until)));
        assert!(matches!(
            reloader.poll(SystemTime::now()),
            PollOutcome::Settling
        ));
        assert!(matches!(settle(&mut reloader), PollOutcome::Applied));
        let second = source.current().serial();
        assert_ne!(first, second);
        assert_eq!(
            stats.counters().cert_not_after,
            Some(crate::tls::unix_seconds(until))
        );

        // Garbage: refused once, the applied certificate stays, and it is not judged again.
        std::fs::write(&files.cert, "not a certificate").unwrap();
        assert!(matches!(
            settle(&mut reloader),
            PollOutcome::Refused(TlsError::NoCertificate { .. })
        ));
        assert!(matches!(
            reloader.poll(SystemTime::now()),
            PollOutcome::Unchanged
        ));
        assert_eq!(source.current().serial(), second);

        // Expired, or from another CA: refused with the reason.
        let past = SystemTime::now() - Duration::from_secs(86_400 * 10);
        write(
            &files,
            &ca,
            Some((past, past + Duration::from_secs(86_400))),
        );
        assert!(matches!(
            settle(&mut reloader),
            PollOutcome::Refused(TlsError::Expired { .. })
        ));
        let rogue = DevCa::generate("rogue CA").unwrap();
        let issued = rogue.issue_node(NodeId::new(1)).unwrap();
        std::fs::write(&files.cert, issued.cert_pem).unwrap();
        std::fs::write(&files.key, issued.key_pem).unwrap();
        assert!(matches!(
            settle(&mut reloader),
            PollOutcome::Refused(TlsError::Untrusted { .. })
        ));
        // A key that belongs to another certificate.
        let other = ca.issue_node(NodeId::new(1)).unwrap();
        let mine = ca.issue_node(NodeId::new(1)).unwrap();
        std::fs::write(&files.cert, mine.cert_pem).unwrap();
        std::fs::write(&files.key, other.key_pem).unwrap();
        assert!(matches!(
            settle(&mut reloader),
            PollOutcome::Refused(TlsError::KeyMismatch { .. })
        ));
        // A missing file.
        std::fs::remove_file(&files.key).unwrap();
        assert!(matches!(
            settle(&mut reloader),
            PollOutcome::Refused(TlsError::Read { .. })
        ));
        assert_eq!(source.current().serial(), second);
        let counters = stats.counters();
        assert_eq!((counters.reloads_ok, counters.reloads_failed), (1, 5));
        assert_eq!(
            counters.cert_not_after,
            Some(crate::tls::unix_seconds(until))
        );
    }

    /// Drives a TLS 1.3 handshake in memory to its end; the client's error, if any.
    fn handshake(
        server: &Arc<rustls::ServerConfig>,
        client: &Arc<rustls::ClientConfig>,
    ) -> Result<(), rustls::Error> {
        let name =
            rustls::pki_types::ServerName::try_from(crate::tls::node_dns_name(NodeId::new(1)))
                .unwrap();
        let mut client = rustls::ClientConnection::new(client.clone(), name).unwrap();
        let mut server = rustls::ServerConnection::new(server.clone()).unwrap();
        // A handshake is two flights each way; a few more rounds cost nothing.
        for _ in 0..8 {
            let mut bytes = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut bytes).unwrap();
            }
            let mut read = &bytes[..];
            while !read.is_empty() {
                server.read_tls(&mut read).unwrap();
            }
            // The server's own verdict shows on the client as the alert it sends.
            let _ = server.process_new_packets();
            let mut bytes = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut bytes).unwrap();
            }
            let mut read = &bytes[..];
            while !read.is_empty() {
                client.read_tls(&mut read).unwrap();
            }
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the in-memory handshake did not finish in 8 rounds");
    }

    /// A listener builds its configuration once from the source; raising the stand-in switch
    /// (what a `certificate-expiry` experiment does before it reports itself active) must make
    /// the very next handshake get the stand-in, with no task run in between (none runs here:
    /// there is no runtime), and lowering it must give the own certificate back.
    #[test]
    fn the_stand_in_switch_is_read_at_each_handshake() {
        let (_dir, files) = files("stand-in");
        let ca = DevCa::generate("stand-in CA").unwrap();
        write(&files, &ca, None);
        let identity = TlsIdentity::load(&files.cert, &files.key, &files.ca).unwrap();
        let past = SystemTime::now() - Duration::from_secs(86_400 * 10);
        let expired = ca
            .issue_node_valid(NodeId::new(1), past, past + Duration::from_secs(86_400))
            .unwrap();
        let stand_in = TlsIdentity::from_pem(
            &files,
            expired.cert_pem.as_bytes(),
            expired.key_pem.as_bytes(),
            ca.cert_pem().as_bytes(),
        )
        .unwrap();
        stand_in.check_stand_in(NodeId::new(1)).unwrap();
        let stats = Arc::new(TlsStats::default());
        let (switch, serve) = watch::channel(false);
        let own_expiry = identity.not_after_unix();
        let stand_in_expiry = stand_in.not_after_unix();
        let (reloader, source) = CertReloader::new(identity, stats.clone());
        let _reloader = reloader.with_stand_in(stand_in, serve);
        let server = Arc::new(source.current().server_config().unwrap());

        let peer = ca.issue_node(NodeId::new(2)).unwrap();
        let peer = TlsIdentity::from_pem(
            &files,
            peer.cert_pem.as_bytes(),
            peer.key_pem.as_bytes(),
            ca.cert_pem().as_bytes(),
        )
        .unwrap();
        // Every handshake a full one: a resumed session presents no certificate.
        let mut client = peer.client_config().unwrap();
        client.resumption = rustls::client::Resumption::disabled();
        let client = Arc::new(client);
        handshake(&server, &client).expect("the own certificate passes");

        switch.send_replace(true);
        // The expiry metric follows at once too (the built-in probe and the alert read it).
        assert_eq!(stats.counters().cert_not_after, stand_in_expiry);
        let refused = handshake(&server, &client).expect_err("the stand-in has expired");
        assert!(
            matches!(
                refused,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                        | rustls::CertificateError::ExpiredContext { .. }
                )
            ),
            "{refused:?}"
        );

        switch.send_replace(false);
        assert_eq!(stats.counters().cert_not_after, own_expiry);
        handshake(&server, &client).expect("the own certificate again");
    }
}
