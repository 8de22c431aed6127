//! TLS under the session (cargo feature `tls`): STLS (RFC 2595 §4) and implicit TLS on port 995
//! (RFC 8314 §3.2), with rustls.
//!
//! TLS changes nothing above the transport. A [`Stream`] is the client's socket inside TLS, and
//! it is a [`Transport`] like the plain socket: the session loop reads command lines from it and
//! writes replies to it, and the states never know. Two things happen here and nowhere else:
//!
//! * [`start`] runs the handshake (`session.rs`, `fn start_tls` calls it after `+OK` to STLS);
//!   a handshake that fails, stalls past the idle time or is cut off ends the session.
//! * [`Certificate::load`] reads `--tls-cert` and `--tls-key` at start, before the listener binds,
//!   and says which file is wrong and how.

use std::fmt;
use std::io::{self, Read, Write};
use std::mem;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::session::Transport;

/// The server's certificate chain and private key, ready for handshakes. Cheap to clone.
#[derive(Clone)]
pub struct Certificate {
    config: Arc<ServerConfig>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Certificate")
    }
}

impl Certificate {
    // ANCHOR: load
    /// Reads a PEM certificate chain (server certificate first) and its PEM private key (PKCS#8,
    /// PKCS#1 or SEC1), as `certbot` and `openssl req` write them. The error names the file.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Certificate, String> {
        let cert_pem = read_pem(cert_file, "--tls-cert")?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--tls-cert {}: not a PEM file: {e}", cert_file.display()))?;
        if chain.is_empty() {
            return Err(format!(
                "--tls-cert {}: holds no certificate (a PEM block starting with -----BEGIN CERTIFICATE-----)",
                cert_file.display()
            ));
        }
        let key_pem = read_pem(key_file, "--tls-key")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            format!(
                "--tls-key {}: holds no private key (-----BEGIN PRIVATE KEY-----, RSA or EC): {e}",
                key_file.display()
            )
        })?;
        Certificate::from_der(chain, key).map_err(|e| {
            format!(
                "--tls-cert {} and --tls-key {} do not fit together: {e}",
                cert_file.display(),
                key_file.display()
            )
        })
    }
    // ANCHOR_END: load

    /// A throwaway self-signed certificate for `names` (host names or IP addresses), for the demo
    /// and the tests. Returns it with its PEM text, for clients to trust.
    pub fn self_signed(names: &[String]) -> Result<(Certificate, String), String> {
        let made = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| format!("cannot make a self-signed certificate: {e}"))?;
        let pem = made.cert.pem();
        let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
            .map_err(|e| format!("cannot use the self-signed key: {e}"))?;
        let certificate = Certificate::from_der(vec![made.cert.der().clone()], key)?;
        Ok((certificate, pem))
    }

    fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Certificate, String> {
        // ring is the provider (Cargo.toml says why). Its defaults are TLS 1.2 and 1.3 only,
        // as RFC 8314 §4.1 asks; rustls never offered anything older.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
        Ok(Certificate {
            config: Arc::new(config),
        })
    }
}

/// A certificate or key file's bytes, or an error naming the file and the flag.
fn read_pem(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))
}

// ANCHOR: start
/// Replaces a plain transport with the same connection inside TLS, once the handshake is done.
/// The session has sent `+OK` to STLS and dropped any octets that came after it.
pub fn start<'a>(
    transport: &mut Box<dyn Transport + 'a>,
    certificate: &Certificate,
) -> io::Result<()> {
    let plain = mem::replace(transport, Box::new(Gone));
    *transport = Box::new(accept(plain, certificate)?);
    Ok(())
}
// ANCHOR_END: start

// ANCHOR: accept
/// Runs the server side of a TLS handshake on `plain`. The handshake has the idle time to finish
/// (RFC 1939 §3's timer, see server.rs): a client that starts one and goes quiet is closed like
/// any silent client. Garbage instead of a ClientHello fails here, with rustls' alert sent back.
pub fn accept<'a>(
    mut plain: Box<dyn Transport + 'a>,
    certificate: &Certificate,
) -> io::Result<Stream<'a>> {
    let mut tls =
        ServerConnection::new(Arc::clone(&certificate.config)).map_err(io::Error::other)?;
    plain.new_wait();
    while tls.is_handshaking() {
        tls.complete_io(&mut plain)
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
    }
    if let (Some(version), Some(suite)) = (tls.protocol_version(), tls.negotiated_cipher_suite()) {
        log::debug!("TLS handshake done: {version:?}, {:?}", suite.suite());
    }
    Ok(Stream {
        tls: StreamOwned::new(tls, plain),
    })
}
// ANCHOR_END: accept

/// A connection inside TLS: what the session reads is the client's plaintext, what it writes
/// is encrypted on its way to the socket.
pub struct Stream<'a> {
    tls: StreamOwned<ServerConnection, Box<dyn Transport + 'a>>,
}

impl Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.tls.read(buf) {
            // A client that closes TCP without TLS's close_notify has gone all the same. POP3
            // ends with QUIT, so a cut-off stream cannot make the server do anything.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }
}

impl Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tls.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tls.flush()
    }
}

/// At the end of a session, TLS's own goodbye (close_notify, RFC 8446 §6.1), so that clients
/// see a clean end rather than a cut-off stream. Skipped when replies are still stuck, which
/// means the client stopped reading: the goodbye would only wait for the write timeout again.
impl Drop for Stream<'_> {
    fn drop(&mut self) {
        if self.tls.conn.wants_write() {
            return;
        }
        self.tls.conn.send_close_notify();
        while self.tls.conn.wants_write() {
            if !matches!(self.tls.conn.write_tls(&mut self.tls.sock), Ok(n) if n > 0) {
                break;
            }
        }
    }
}

impl Transport for Stream<'_> {
    fn new_wait(&mut self) {
        // The idle timer sits on the socket below TLS; only the session sees plaintext lines.
        self.tls.sock.new_wait();
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// What a transport is for the moment of the swap in [`start`], and after a failed handshake:
/// a closed connection.
struct Gone;

impl Read for Gone {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::NotConnected.into())
    }
}

impl Write for Gone {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::NotConnected.into())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Gone {
    fn new_wait(&mut self) {}
}
