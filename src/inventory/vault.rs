//! Ansible Vault, read as `ansible-vault` writes it: whole vaulted files
//! (`$ANSIBLE_VAULT;1.1;AES256`, and `1.2` with a vault ID) and inline
//! `!vault |` values, decrypted with the passwords given by
//! `--vault-password-file` (a file, or an executable that prints the
//! password), `--ask-vault-pass` and `--vault-id label@source`.
//!
//! The format (format 1.1/1.2, cipher AES256): after the header line, hex
//! text whose bytes are three hex lines: salt, HMAC, ciphertext. PBKDF2 with
//! HMAC-SHA256, 10 000 iterations, derives 80 bytes from the password and
//! the salt: the AES-256 key, the HMAC-SHA256 key and the CTR counter
//! block. The HMAC over the ciphertext is verified (in constant time, by
//! the `hmac` crate) before anything is decrypted, so a tampered vault or
//! a wrong password is refused without producing any plaintext; then
//! AES-256-CTR and PKCS#7 unpadding. Every primitive comes from the
//! RustCrypto crates; nothing here is hand-written crypto.
//!
//! Vault passwords and decrypted text are secrets: held in `Zeroizing`
//! buffers, wiped on drop, never quoted in errors or logs. A password
//! script runs with the allow-listed child environment (`child_env`), so
//! it never sees the controller's own secrets.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{KeyInit as _, Mac as _};
use secrecy::SecretString;
use zeroize::Zeroizing;

/// The label of a password given without one (`--vault-password-file`,
/// `--ask-vault-pass`), as in Ansible.
pub const DEFAULT_LABEL: &str = "default";

/// A vault password is a line of text; a password file or script printing
/// more than this is not one.
const MAX_PASSWORD_BYTES: usize = 64 * 1024;

/// Largest vault payload decrypted (a vaulted variables file is a few
/// kilobytes; the bound keeps a hostile file from costing memory).
pub const MAX_VAULT_BYTES: usize = 16 * 1024 * 1024;

const PBKDF2_ROUNDS: u32 = 10_000;

type Aes256Ctr = ctr::Ctr128BE<Aes256>;
type HmacSha256 = hmac::Hmac<sha2_v011::Sha256>;

/// One vault password and the vault ID it is known by.
pub struct VaultSecret {
    pub label: String,
    password: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for VaultSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultSecret({:?}, <redacted>)", self.label)
    }
}

impl VaultSecret {
    /// A password as Ansible keeps it: surrounding whitespace stripped; an
    /// empty password is refused (`what` names where it came from).
    pub fn new(label: &str, raw: &[u8], what: &str) -> Result<VaultSecret, String> {
        let password = Zeroizing::new(strip_ascii_ws(raw).to_vec());
        if password.is_empty() {
            return Err(format!("{what}: the vault password is empty"));
        }
        Ok(VaultSecret {
            label: label.to_string(),
            password,
        })
    }
}

fn strip_ascii_ws(b: &[u8]) -> &[u8] {
    // Python's bytes.strip(): space, \t, \n, \r, \x0b, \x0c.
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let start = b.iter().position(|c| !ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ws(c)).map_or(start, |e| e + 1);
    &b[start..end]
}

/// The passwords given on the command line, shared by every inventory
/// read in this process (like the command line they come from).
static SECRETS: Mutex<Vec<Arc<VaultSecret>>> = Mutex::new(Vec::new());

/// Install the vault passwords inventories are decrypted with (replacing
/// any installed before).
pub fn set_secrets(secrets: Vec<VaultSecret>) {
    let mut s = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    *s = secrets.into_iter().map(Arc::new).collect();
}

/// The installed passwords, in the order they were given.
pub fn secrets() -> Vec<Arc<VaultSecret>> {
    SECRETS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The vault options, shared by every command that reads inventories.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VaultArgs {
    /// Vault password file, or an executable that prints the password (as Ansible's
    /// --vault-password-file). Repeat for several; each has the vault ID `default`.
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        env = "ANSIBLE_VAULT_PASSWORD_FILE"
    )]
    pub vault_password_file: Vec<PathBuf>,
    /// Prompt for the vault password (vault ID `default`).
    #[arg(long, global = true)]
    pub ask_vault_pass: bool,
    /// A vault password with its vault ID: `label@FILE` (a file or an executable),
    /// `label@prompt`, or a bare FILE or `prompt` (label `default`). Repeatable.
    #[arg(long, value_name = "ID@SOURCE", global = true)]
    pub vault_id: Vec<String>,
}

impl VaultArgs {
    /// Read every password the options name (running scripts, prompting),
    /// in Ansible's order: `--vault-id`s, then password files, then the
    /// prompt of `--ask-vault-pass`.
    pub fn load(&self) -> Result<Vec<VaultSecret>, String> {
        let mut out = Vec::new();
        for id in &self.vault_id {
            let (label, source) = match id.split_once('@') {
                Some((l, s)) if !l.is_empty() => (l, s),
                _ => (DEFAULT_LABEL, id.as_str()),
            };
            if source == "prompt" {
                out.push(prompt(label)?);
            } else {
                out.push(from_source(label, Path::new(source))?);
            }
        }
        for f in &self.vault_password_file {
            out.push(from_source(DEFAULT_LABEL, f)?);
        }
        if self.ask_vault_pass {
            out.push(prompt(DEFAULT_LABEL)?);
        }
        Ok(out)
    }

    /// Load the passwords and install them for the inventories read next.
    pub fn install(&self) -> Result<(), String> {
        let secrets = self.load()?;
        set_secrets(secrets);
        Ok(())
    }
}

fn prompt(label: &str) -> Result<VaultSecret, String> {
    let text = if label == DEFAULT_LABEL {
        "Vault password: ".to_string()
    } else {
        format!("Vault password ({label}): ")
    };
    let p = Zeroizing::new(
        rpassword::prompt_password(text)
            .map_err(|e| format!("--ask-vault-pass needs a terminal: {e}"))?,
    );
    VaultSecret::new(label, p.as_bytes(), "the vault password prompt")
}

/// A password file, or an executable that prints the password. A script
/// whose name ends in `-client` is asked for the label as Ansible asks
/// its vault client scripts (`--vault-id LABEL`).
pub fn from_source(label: &str, path: &Path) -> Result<VaultSecret, String> {
    let what = path.display().to_string();
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("vault password file {what}: cannot read: {e}"))?;
    if meta.is_dir() {
        return Err(format!(
            "vault password file {what}: is a directory, name a file"
        ));
    }
    if is_executable(&meta) {
        return run_script(label, path);
    }
    let mut buf = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PASSWORD_BYTES as u64 + 1).read_to_end(&mut buf))
        .map_err(|e| format!("vault password file {what}: cannot read: {e}"))?;
    if buf.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "vault password file {what}: larger than {MAX_PASSWORD_BYTES} bytes, not a password"
        ));
    }
    VaultSecret::new(label, &buf, &format!("vault password file {what}"))
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    // Windows has no execute bit; Ansible does not run there either. A
    // password file is read as a file.
    false
}

fn run_script(label: &str, path: &Path) -> Result<VaultSecret, String> {
    let what = path.display().to_string();
    let mut cmd = Command::new(path);
    let is_client = path
        .file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| s.ends_with("-client"));
    if is_client {
        cmd.arg("--vault-id").arg(label);
    }
    crate::child_env::restrict(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("vault password script {what}: cannot run: {e}"))?;
    let mut buf = Zeroizing::new(Vec::new());
    let read = match child.stdout.take() {
        Some(out) => out
            .take(MAX_PASSWORD_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map(|_| ()),
        None => Ok(()),
    };
    if buf.len() > MAX_PASSWORD_BYTES {
        // Do not wait on a script that keeps writing.
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| format!("vault password script {what}: {e}"))?;
    read.map_err(|e| format!("vault password script {what}: cannot read its output: {e}"))?;
    if buf.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "vault password script {what}: printed more than {MAX_PASSWORD_BYTES} bytes, \
             not a password"
        ));
    }
    if !status.success() {
        return Err(format!("vault password script {what}: failed ({status})"));
    }
    VaultSecret::new(label, &buf, &format!("vault password script {what}"))
}

/// Whether `text` is vault ciphertext (a vaulted file or an inline value).
pub fn is_vaulted(text: &str) -> bool {
    text.trim_start().starts_with("$ANSIBLE_VAULT;")
}

/// A parsed vault envelope.
struct Envelope {
    vault_id: Option<String>,
    salt: Vec<u8>,
    hmac: Vec<u8>,
    ciphertext: Vec<u8>,
}

fn parse_envelope(text: &str) -> Result<Envelope, String> {
    let mut lines = text.trim_start().lines();
    let header = lines.next().unwrap_or("").trim();
    let parts: Vec<&str> = header.split(';').map(str::trim).collect();
    if parts.len() < 3 || parts[0] != "$ANSIBLE_VAULT" {
        return Err("not an Ansible Vault header".into());
    }
    match parts[1] {
        "1.1" | "1.2" => {}
        v => return Err(format!("unsupported vault format version {v:?}")),
    }
    if parts[2] != "AES256" {
        return Err(format!("unsupported vault cipher {:?}", parts[2]));
    }
    let vault_id = parts
        .get(3)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_string());
    let mut hex_text = String::new();
    for l in lines {
        hex_text.push_str(l.trim());
    }
    let inner = hex::decode(hex_text.as_bytes()).map_err(|_| "the vault body is not hex")?;
    let mut parts = inner.splitn(3, |&b| b == b'\n');
    let salt = parts.next().unwrap_or_default();
    let mac = parts.next().ok_or("the vault body is truncated")?;
    let ct = parts.next().ok_or("the vault body is truncated")?;
    let de = |b: &[u8]| hex::decode(strip_ascii_ws(b)).map_err(|_| "the vault body is not hex");
    Ok(Envelope {
        vault_id,
        salt: de(salt)?,
        hmac: de(mac)?,
        ciphertext: de(ct)?,
    })
}

/// Why a vault could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultError {
    /// No vault password was given at all.
    NoSecrets,
    /// None of the passwords verifies: a wrong password, or a tampered vault.
    NoMatch {
        vault_id: Option<String>,
        tried: usize,
    },
    /// Not a vault Ansible would open.
    Malformed(String),
}

impl std::fmt::Display for VaultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VaultError::NoSecrets => f.write_str(
                "is vault-encrypted, but no vault password was given (use \
                 --vault-password-file, --ask-vault-pass or --vault-id)",
            ),
            VaultError::NoMatch { vault_id, tried } => {
                write!(
                    f,
                    "vault decryption failed: none of the {tried} vault password(s) given \
                     opens it (a wrong password, or the vault was altered: its HMAC does not \
                     verify)"
                )?;
                if let Some(id) = vault_id {
                    write!(f, "; it was encrypted with vault ID {id:?}")?;
                }
                Ok(())
            }
            VaultError::Malformed(m) => write!(f, "invalid vault: {m}"),
        }
    }
}

/// Decrypt vault text with the installed passwords: the one whose label
/// matches the vault ID first, then the others in order, as Ansible tries
/// them.
pub fn decrypt(text: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    decrypt_with(text, &secrets())
}

pub fn decrypt_with(
    text: &str,
    secrets: &[Arc<VaultSecret>],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    if text.len() > MAX_VAULT_BYTES.saturating_mul(2) {
        return Err(VaultError::Malformed(format!(
            "larger than the {} MiB accepted",
            MAX_VAULT_BYTES / (1024 * 1024)
        )));
    }
    let env = parse_envelope(text).map_err(VaultError::Malformed)?;
    if secrets.is_empty() {
        return Err(VaultError::NoSecrets);
    }
    let matching = secrets
        .iter()
        .filter(|s| env.vault_id.as_deref() == Some(s.label.as_str()));
    let others = secrets
        .iter()
        .filter(|s| env.vault_id.as_deref() != Some(s.label.as_str()));
    for s in matching.chain(others) {
        if let Some(plain) = open(&env, &s.password) {
            return Ok(plain);
        }
    }
    Err(VaultError::NoMatch {
        vault_id: env.vault_id,
        tried: secrets.len(),
    })
}

/// Verify, then decrypt; `None` when the HMAC does not verify (wrong
/// password or altered vault) or the padding is invalid.
fn open(env: &Envelope, password: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut derived = Zeroizing::new([0u8; 80]);
    pbkdf2::pbkdf2_hmac::<sha2_v011::Sha256>(password, &env.salt, PBKDF2_ROUNDS, &mut *derived);
    let (key, rest) = derived.split_at(32);
    let (mac_key, iv) = rest.split_at(32);
    let mut mac = HmacSha256::new_from_slice(mac_key).ok()?;
    mac.update(&env.ciphertext);
    // Constant-time comparison (hmac's verify_slice).
    mac.verify_slice(&env.hmac).ok()?;
    let mut buf = Zeroizing::new(env.ciphertext.clone());
    let mut cipher = Aes256Ctr::new_from_slices(key, iv).ok()?;
    cipher.apply_keystream(&mut buf);
    // PKCS#7 with AES's 16-byte block, as Ansible pads.
    let pad = usize::from(*buf.last()?);
    if pad == 0
        || pad > 16
        || pad > buf.len()
        || buf[buf.len() - pad..]
            .iter()
            .any(|&b| usize::from(b) != pad)
    {
        return None;
    }
    let n = buf.len() - pad;
    buf.truncate(n);
    Some(buf)
}

/// A decrypted value that must stay secret: the password it holds never
/// reaches output, logs or the journal. Shared (`Arc`) between every host
/// that inherits it from a group.
#[derive(Clone)]
pub struct VaultValue(pub Arc<SecretString>);

impl std::fmt::Debug for VaultValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultValue(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `ansible-vault encrypt_string --vault-id dev@pw 'inl'`
    /// (password file holding `pw1`), ansible-core 2.19.
    const INLINE: &str = "$ANSIBLE_VAULT;1.2;AES256;dev\n\
        64373933303966623563363563363630313165393661393264666234313761376566313561326366\n\
        3130353865353631646533343239626630376331353730320a633237313438386466326662353866\n\
        37393238313762316234353931313563306161356638643463373933653639343562313564323961\n\
        6563383431313635320a366633353563313836626265666438353336386161356134323230373534\n\
        3033\n";

    fn secret(label: &str, pw: &str) -> Arc<VaultSecret> {
        Arc::new(VaultSecret::new(label, pw.as_bytes(), "test").unwrap())
    }

    #[test]
    fn decrypts_what_ansible_vault_wrote() {
        let p = decrypt_with(INLINE, &[secret("dev", "pw1\n")]).unwrap();
        assert_eq!(&p[..], b"inl");
        // The label only orders the attempts: another label still opens it.
        let p = decrypt_with(INLINE, &[secret("x", "nope"), secret("other", "pw1")]).unwrap();
        assert_eq!(&p[..], b"inl");
    }

    #[test]
    fn wrong_password_and_tampering_are_refused() {
        let e = decrypt_with(INLINE, &[secret("dev", "pw2")]).unwrap_err();
        assert!(matches!(e, VaultError::NoMatch { .. }), "{e}");
        assert!(e.to_string().contains("\"dev\""), "{e}");
        // Flip one hex digit of the ciphertext (the last line).
        let tampered = INLINE.replace("\n3033\n", "\n3034\n");
        let e = decrypt_with(&tampered, &[secret("dev", "pw1")]).unwrap_err();
        assert!(matches!(e, VaultError::NoMatch { .. }), "{e}");
        assert_eq!(
            decrypt_with(INLINE, &[]).unwrap_err(),
            VaultError::NoSecrets
        );
        assert!(matches!(
            decrypt_with("$ANSIBLE_VAULT;1.1;AES256\nzz\n", &[secret("a", "b")]),
            Err(VaultError::Malformed(_))
        ));
    }

    #[test]
    fn passwords_are_stripped_and_never_empty() {
        assert!(VaultSecret::new("a", b" \n\t", "t").is_err());
        let s = VaultSecret::new("a", b"  x y \r\n", "t").unwrap();
        assert_eq!(&s.password[..], b"x y");
        assert!(!format!("{s:?}").contains("x y"));
    }
}
