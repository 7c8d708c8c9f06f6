//! The LDAP inventory source (`src/inventory/ldap.rs`) against real directory servers on
//! loopback (see `tests/ldap_support`): a Samba Active Directory DC holding 1,200 enabled
//! computers in nested OUs (plus disabled and hostile accounts), and an OpenLDAP `slapd` that
//! enforces a 1,000-entry page cap as AD does. The library function is called directly
//! (`pushscan::inventory::ldap::load*`), as the inventory dispatch will.
//!
//! Needs root, Samba AD DC, ldb-tools, slapd and openssl; `scripts/test` installs them.

mod ldap_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ldap_support as fx;
use pushscan::inventory::ldap::{is_ldap_source, load, load_with_report, LoadReport};
use pushscan::inventory::{Inventory, InventoryError};
use serde_json::Value;

/// Environment variables holding the test passwords, set once before any test reads them.
const PW_ENV: &str = "PUSHSCAN_TEST_AD_PASSWORD";
const WRONG_PW_ENV: &str = "PUSHSCAN_TEST_AD_WRONG_PASSWORD";
const WRONG_PASSWORD: &str = "Wr0ng-But-Plausible.Pw#77";
const SLAPD_PW_ENV: &str = "PUSHSCAN_TEST_SLAPD_PASSWORD";

fn env_init() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Every test calls this first, so nothing reads the environment concurrently.
        std::env::set_var(PW_ENV, fx::ADMIN_PASSWORD);
        std::env::set_var(WRONG_PW_ENV, WRONG_PASSWORD);
        std::env::set_var(SLAPD_PW_ENV, fx::SLAPD_PASSWORD);
        #[cfg(feature = "kerberos")]
        for (k, v) in fx::krb5_env() {
            std::env::set_var(k, v);
        }
    });
}

/// Writes `text` as `ad.yml` in a fresh directory, with a copy of `ca` as `ca.pem` beside it
/// (so `ca_file: ca.pem` also checks that the path is relative to the source file).
fn source(text: &str, ca: &Path) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::Builder::new()
        .prefix("pushscan-ldap-src-")
        .tempdir()
        .unwrap();
    std::fs::copy(ca, dir.path().join("ca.pem")).unwrap();
    let path = dir.path().join("ad.yml");
    std::fs::write(&path, text).unwrap();
    assert!(
        is_ldap_source(text),
        "not detected as an LDAP source:\n{text}"
    );
    (dir, path, text.to_string())
}

async fn load_ok(text: &str, ca: &Path) -> (Inventory, LoadReport) {
    let (_dir, path, text) = source(text, ca);
    let started = Instant::now();
    let r = load_with_report(&path, &text).await;
    let elapsed = started.elapsed();
    match r {
        Ok((inv, rep)) => {
            eprintln!(
                "load: {} hosts, {} entries, {} pages (largest {}), {} skipped, via {} ({}), {:?}",
                rep.hosts,
                rep.entries,
                rep.pages,
                rep.largest_page,
                rep.skipped_total,
                rep.server,
                rep.tls,
                elapsed
            );
            (inv, rep)
        }
        Err(e) => panic!("load failed: {e}"),
    }
}

async fn load_err(text: &str, ca: &Path) -> InventoryError {
    let (_dir, path, text) = source(text, ca);
    match load_with_report(&path, &text).await {
        Ok((inv, _)) => panic!("expected an error, got {} hosts", inv.hosts.len()),
        Err(e) => e,
    }
}

fn assert_no_password(msg: &str) {
    for pw in [fx::ADMIN_PASSWORD, WRONG_PASSWORD, fx::SLAPD_PASSWORD] {
        assert!(!msg.contains(pw), "a password leaked into: {msg}");
    }
}

fn ad_source(server: &str, extra: &str) -> String {
    format!(
        "plugin: pushscan.ldap\nservers: [\"{server}\"]\nca_file: ca.pem\nuser: {}\n\
         password_env: {PW_ENV}\n{extra}",
        fx::ADMIN_UPN
    )
}

/// "OU=Floor3,OU=Sales,OU=Tokyo" -> "Tokyo/Sales/Floor3"; "OU=Dev\, Ops,OU=Osaka" ->
/// "Osaka/Dev, Ops".
fn ou_path(ou_dn: &str) -> String {
    let mut parts: Vec<String> = ou_dn
        .split(",OU=")
        .map(|p| p.trim_start_matches("OU=").replace("\\,", ","))
        .collect();
    parts.reverse();
    parts.join("/")
}

fn names(hosts: &[&pushscan::inventory::Host]) -> Vec<String> {
    hosts.iter().map(|h| h.name.clone()).collect()
}

#[tokio::test]
async fn ldaps_reads_every_enabled_computer_page_by_page() {
    env_init();
    let dc = fx::dc();
    eprintln!(
        "Samba AD DC: provision {:?}, ldbadd of {} computers {:?}, start {:?}",
        dc.provision,
        fx::samba_good_computers() + fx::DISABLED + fx::hostile_lab_names().len(),
        dc.ldbadd,
        dc.start
    );
    // No base: the domain comes from the rootDSE's defaultNamingContext.
    let (inv, rep) = load_ok(&ad_source(&dc.ldaps_url(), "page_size: 500\n"), &dc.pki.ca).await;

    // Every enabled computer with a valid name, plus the DC's own account.
    let expected = fx::samba_good_computers() + 1;
    assert!(expected > 1000);
    assert_eq!(inv.hosts.len(), expected);
    assert_eq!(rep.hosts, expected);
    assert_eq!(rep.tls, "ldaps");
    assert_eq!(rep.bases.len(), 1);
    assert!(
        rep.bases[0].eq_ignore_ascii_case(fx::BASE_DN),
        "{:?}",
        rep.bases
    );
    // Paging ran: > 1,000 entries in pages of at most 500.
    assert!(rep.entries > 1000, "{}", rep.entries);
    assert!(
        rep.pages >= rep.entries.div_ceil(500),
        "{} pages",
        rep.pages
    );
    assert!(rep.pages >= 3 && rep.largest_page <= 500, "{rep:?}");

    for (ou, count, os, prefix) in fx::SAMBA_LAYOUT {
        for i in 0..*count {
            let name = fx::host_name(prefix, i);
            let h = inv.host(&name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(h.address, name);
            assert_eq!(h.connection.name(), "winrm");
            assert_eq!(h.vars["ansible_connection"], Value::from("winrm"));
            assert_eq!(h.vars["os"], Value::from(*os), "{name}");
            assert_eq!(h.vars["ou"], Value::from(ou_path(ou)), "{name}");
            let dn = h.vars["distinguished_name"]
                .as_str()
                .unwrap()
                .to_ascii_lowercase();
            let tail = format!(",{ou},{}", fx::BASE_DN).to_ascii_lowercase();
            assert!(dn.ends_with(&tail), "{dn} vs {tail}");
        }
    }
    let dc1 = inv
        .host("dc1.corp.example")
        .expect("the DC's own computer account");
    assert_eq!(dc1.vars["ou"], Value::from("Domain Controllers"));

    // Disabled accounts are filtered out by the server-side filter.
    for i in 0..fx::DISABLED {
        assert!(inv.host(&fx::host_name("tk-off-", i)).is_none());
    }

    // Three levels of OUs as nested groups; --limit on a parent takes everything below.
    assert_eq!(inv.groups["ou_tokyo"].children, vec!["ou_tokyo_sales"]);
    assert_eq!(
        inv.groups["ou_tokyo_sales"].children,
        vec!["ou_tokyo_sales_floor3"]
    );
    assert_eq!(inv.groups["ou_osaka"].children, vec!["ou_osaka_dev_ops"]);
    for (pattern, n) in [
        ("ou_tokyo", 700),
        ("ou_tokyo_sales", 600),
        ("ou_tokyo_sales_floor3", 400),
        ("ou_osaka", 300),
        ("ou_osaka_dev_ops", 300),
        ("ou_paris", 197),
        ("ou_lab", 3),
        ("ou_domain_controllers", 1),
        ("ou_tokyo:!ou_tokyo_sales", 100),
        ("ou_tokyo:&ou_tokyo_sales_floor3", 400),
    ] {
        let sel = inv
            .select(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"));
        assert_eq!(sel.len(), n, "{pattern}");
    }
    assert!(names(&inv.select("ou_tokyo:!ou_tokyo_sales").unwrap())
        .iter()
        .all(|n| n.starts_with("tk-srv-")));
    let h = inv.host("tk-f3-0007.corp.example").unwrap();
    assert_eq!(
        h.group_paths,
        vec![vec!["ou_tokyo", "ou_tokyo_sales", "ou_tokyo_sales_floor3"]]
    );
    assert_eq!(
        h.groups,
        vec!["ou_tokyo", "ou_tokyo_sales", "ou_tokyo_sales_floor3"]
    );
    assert_eq!(
        inv.host("os-devops-0000.corp.example").unwrap().vars["ou"],
        Value::from("Osaka/Dev, Ops")
    );

    // The hostile accounts in OU=Lab are skipped, each with its reason, and none of their
    // names reached the inventory.
    assert_eq!(rep.skipped_total, 5, "{:#?}", rep.skipped);
    let reasons: Vec<&str> = rep.skipped.iter().map(|s| s.reason.as_str()).collect();
    let count = |needle: &str| reasons.iter().filter(|r| r.contains(needle)).count();
    assert_eq!(count("is not a valid host name"), 3, "{reasons:#?}");
    assert_eq!(count("no dNSHostName"), 1, "{reasons:#?}");
    assert_eq!(count("also claimed by"), 1, "{reasons:#?}");
    assert!(
        reasons.iter().any(|r| r.contains("evil;rm -rf /")),
        "{reasons:#?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("lab-nl\\x0a.corp.example")),
        "{reasons:#?}"
    );
    assert!(rep
        .skipped
        .iter()
        .all(|s| !s.reason.contains('\n') && !s.dn.contains('\n')));
    assert_eq!(rep.warnings_total, 5, "{:#?}", rep.warnings);
    for h in &inv.hosts {
        assert!(
            h.name.len() <= 253
                && h.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
            "{:?}",
            h.name
        );
    }
    // The first claimant keeps the duplicated name.
    assert_eq!(
        inv.host("lab-0001.corp.example").unwrap().vars["os"],
        Value::from("Windows 11 Pro")
    );
}

#[tokio::test]
async fn starttls_with_ous_and_os_filter() {
    env_init();
    let dc = fx::dc();
    // StartTLS on 389, one OU subtree (given twice, overlapping: entries are kept once).
    let extra = "tls: starttls\nous:\n  - \"OU=Tokyo,DC=corp,DC=example\"\n  - \
                 \"OU=Sales,OU=Tokyo,DC=corp,DC=example\"\npage_size: 1000\n";
    let (inv, rep) = load_ok(&ad_source(&dc.ldap_url(), extra), &dc.pki.ca).await;
    assert_eq!(rep.tls, "starttls");
    assert_eq!(rep.server, format!("ldap://{}:389", fx::DC_ADDR));
    assert_eq!(inv.hosts.len(), 700);
    assert_eq!(inv.select("ou_tokyo").unwrap().len(), 700);

    // os_filter adds (operatingSystem=...) to the default filter.
    let (inv, _) = load_ok(
        &ad_source(&dc.ldaps_url(), "os_filter: \"Windows Server*\"\n"),
        &dc.pki.ca,
    )
    .await;
    assert_eq!(inv.hosts.len(), 100);
    assert!(inv.hosts.iter().all(|h| h.name.starts_with("tk-srv-")));

    let extra = "ous: [\"OU=Osaka,DC=corp,DC=example\", \"OU=Paris,DC=corp,DC=example\"]\n\
                 os_filter: [\"Windows 11*\", \"*Server*\"]\n";
    let (inv, _) = load_ok(&ad_source(&dc.ldaps_url(), extra), &dc.pki.ca).await;
    assert_eq!(inv.hosts.len(), 300 + 197);

    // Filter metacharacters in os_filter are escaped (RFC 4515), so this matches nothing
    // instead of breaking the filter.
    let (inv, _) = load_ok(
        &ad_source(&dc.ldaps_url(), "os_filter: \"Windows (x86)*\"\n"),
        &dc.pki.ca,
    )
    .await;
    assert_eq!(inv.hosts.len(), 0);

    // vars and connection apply to every host.
    let extra = "ous: [\"OU=Lab,DC=corp,DC=example\"]\nconnection: ssh\nvars:\n  site: lab\n  \
                 ansible_user: scanner\n";
    let (inv, rep) = load_ok(&ad_source(&dc.ldaps_url(), extra), &dc.pki.ca).await;
    assert_eq!(inv.hosts.len(), 3);
    assert_eq!(rep.skipped_total, 5);
    for h in &inv.hosts {
        assert_eq!(h.connection.name(), "ssh");
        assert_eq!(h.user.as_deref(), Some("scanner"));
        assert_eq!(h.vars["site"], Value::from("lab"));
    }
}

#[tokio::test]
async fn certificates_are_always_verified() {
    env_init();
    let dc = fx::dc();
    // The CA beside the source file is an unrelated one: LDAPS and StartTLS both refuse.
    for (server, extra) in [(dc.ldaps_url(), ""), (dc.ldap_url(), "tls: starttls\n")] {
        let e = load_err(&ad_source(&server, extra), &dc.pki.wrong_ca).await;
        let msg = e.to_string();
        assert!(
            msg.contains("TLS certificate of 127.0.80.1 not accepted") && msg.contains("ca_file"),
            "{msg}"
        );
        assert!(msg.contains("UnknownIssuer"), "{msg}");
        assert_no_password(&msg);
    }
    // No ca_file: the system roots, which do not know the test CA.
    let text = ad_source(&dc.ldaps_url(), "").replace("ca_file: ca.pem\n", "");
    let e = load_err(&text, &dc.pki.ca).await;
    let msg = e.to_string();
    assert!(
        msg.contains("TLS certificate of 127.0.80.1 not accepted"),
        "{msg}"
    );
    assert_no_password(&msg);
}

#[tokio::test]
async fn wrong_password_is_a_clear_auth_error() {
    env_init();
    let dc = fx::dc();
    let text = ad_source(&dc.ldaps_url(), "").replace(PW_ENV, WRONG_PW_ENV);
    let e = load_err(&text, &dc.pki.ca).await;
    let msg = e.to_string();
    assert!(
        msg.contains("bind as \"Administrator@corp.example\" refused: invalid credentials"),
        "{msg}"
    );
    assert_no_password(&msg);

    // An unset password variable stops before connecting.
    let text = ad_source(&dc.ldaps_url(), "").replace(PW_ENV, "PUSHSCAN_TEST_UNSET_VARIABLE");
    let e = load_err(&text, &dc.pki.ca).await;
    assert!(
        e.message.contains("export PUSHSCAN_TEST_UNSET_VARIABLE"),
        "{e}"
    );
}

#[tokio::test]
async fn plain_ldap_and_file_passwords_are_refused_before_connecting() {
    env_init();
    let ca = &fx::pki().ca;
    // A listener that would see any connection attempt.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let text = format!(
        "plugin: pushscan.ldap\nuser: svc@corp.example\npassword_env: {PW_ENV}\nservers:\n  - \
         ldap://127.0.0.1:{port}\n"
    );
    let e = load_err(&text, ca).await;
    assert_eq!((e.line, e.col), (Some(5), Some(5)), "{e}");
    assert!(e.message.contains("without StartTLS is refused"), "{e}");
    assert!(e.message.contains("in clear"), "{e}");

    let text = format!(
        "plugin: pushscan.ldap\nservers: [ldaps://127.0.0.1:{port}]\nuser: svc\npassword: \"{}\"\n",
        fx::ADMIN_PASSWORD
    );
    let e = load_err(&text, ca).await;
    assert_eq!((e.line, e.col), (Some(4), Some(1)), "{e}");
    assert_no_password(&e.to_string());

    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("something connected: {other:?}"),
    }
}

#[tokio::test]
async fn next_server_is_tried_when_one_is_down() {
    env_init();
    let dc = fx::dc();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = format!(
        "plugin: pushscan.ldap\nservers:\n  - ldaps://127.0.0.1:{closed}\n  - {}\n\
         ca_file: ca.pem\nuser: {}\npassword_env: {PW_ENV}\nbase_dn: OU=Lab,DC=corp,DC=example\n",
        dc.ldaps_url(),
        fx::ADMIN_UPN
    );
    let (inv, rep) = load_ok(&text, &dc.pki.ca).await;
    assert_eq!(inv.hosts.len(), 3);
    assert_eq!(rep.failed_servers.len(), 1, "{:?}", rep.failed_servers);
    assert!(
        rep.failed_servers[0].contains("connection refused"),
        "{:?}",
        rep.failed_servers
    );
    assert_eq!(rep.server, format!("ldaps://{}:636", fx::DC_ADDR));
}

/// `auth: kerberos` binds with the caller's ticket (here: kinit as Administrator against the
/// DC's own KDC), inside LDAPS and inside StartTLS.
#[cfg(feature = "kerberos")]
#[tokio::test]
async fn kerberos_bind_with_the_callers_ticket() {
    env_init();
    let dc = fx::dc();
    for (server, tls) in [(dc.ldaps_url(), ""), (dc.ldap_url(), "tls: starttls\n")] {
        let text = format!(
            "plugin: pushscan.ldap\nservers: [\"{server}\"]\n{tls}ca_file: ca.pem\nauth: kerberos\n\
             base_dn: OU=Lab,DC=corp,DC=example\n"
        );
        let (inv, rep) = load_ok(&text, &dc.pki.ca).await;
        assert_eq!(inv.hosts.len(), 3, "{server}");
        assert_eq!(rep.skipped_total, 5);
    }
}

/// Without the `kerberos` feature, `auth: kerberos` is refused when the file is read.
#[cfg(not(feature = "kerberos"))]
#[tokio::test]
async fn kerberos_is_refused_without_the_feature() {
    let text = "plugin: pushscan.ldap\nservers: [ldaps://dc1]\nauth: kerberos\n";
    let e = load_err(text, &fx::pki().ca).await;
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("not supported by this build"), "{e}");
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn load_logs_a_warning_per_skipped_computer() {
    env_init();
    let dc = fx::dc();
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (_dir, path, text) = source(
        &ad_source(&dc.ldaps_url(), "base_dn: OU=Lab,DC=corp,DC=example\n"),
        &dc.pki.ca,
    );
    let inv = load(&path, &text).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inv.hosts.len(), 3);
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 5, "{log}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("WARN") && l.contains("skipped computer")),
        "{log}"
    );
    assert!(
        log.contains("dNSHostName evil;rm -rf / is not a valid host name"),
        "{log}"
    );
    // The newline is shown escaped, never raw.
    assert!(log.contains("lab-nl\\x0a.corp.example"), "{log}");
    assert!(
        log.contains(&format!("dNSHostName {}…", "a".repeat(80))),
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// slapd: a server that enforces the 1,000-entry page cap.

fn slapd_source(user: &str, extra: &str) -> String {
    format!(
        "kind: ldap\nservers: [\"{}\"]\nca_file: ca.pem\nbind_dn: \"{user}\"\n\
         password_env: {SLAPD_PW_ENV}\nbase_dn: \"{}\"\n{extra}",
        fx::slapd().ldaps_url(),
        fx::SLAPD_BASE
    )
}

/// The fixture itself: without paging, slapd stops at 1,000 entries with sizeLimitExceeded,
/// as AD does, so the paging loop below really is what gets past 1,000.
async fn slapd_caps_unpaged_searches() {
    use ldap3::{LdapConnAsync, LdapConnSettings, Scope};
    use rustls::pki_types::pem::PemObject as _;
    let s = fx::slapd();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&s.pki.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let settings = LdapConnSettings::new().set_config(Arc::new(config));
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &s.ldaps_url())
        .await
        .unwrap();
    let driver = tokio::spawn(conn.drive());
    ldap.simple_bind(fx::SLAPD_READER, fx::SLAPD_PASSWORD)
        .await
        .unwrap()
        .success()
        .unwrap();
    let res = ldap
        .search(
            fx::SLAPD_BASE,
            Scope::Subtree,
            pushscan::inventory::ldap::DEFAULT_FILTER,
            vec!["dNSHostName"],
        )
        .await
        .unwrap();
    assert_eq!(res.1.rc, 4, "expected sizeLimitExceeded: {:?}", res.1);
    assert_eq!(res.0.len(), 1000);
    let _ = ldap.unbind().await;
    driver.abort();
}

#[tokio::test]
async fn paging_loop_against_a_server_capping_pages_at_1000() {
    env_init();
    let s = fx::slapd();
    eprintln!(
        "slapd: setup with {} computers {:?}",
        fx::SLAPD_COMPUTERS,
        s.setup
    );
    slapd_caps_unpaged_searches().await;

    let (inv, rep) = load_ok(
        &slapd_source(
            fx::SLAPD_READER,
            "page_size: 1000\nattributes:\n  desk: description\n",
        ),
        &s.pki.ca,
    )
    .await;
    let enabled = fx::slapd_enabled();
    assert_eq!(inv.hosts.len(), enabled);
    assert_eq!(rep.pages, enabled.div_ceil(1000));
    assert_eq!(rep.largest_page, 1000);
    let h = inv.host("ly0007.corp.example").unwrap();
    assert_eq!(h.vars["desk"], Value::from("desk 7"));
    assert_eq!(h.vars["os"], Value::from("Windows 10 Enterprise"));
    assert_eq!(h.vars["ou"], Value::from("France/Lyon"));
    assert_eq!(inv.select("ou_france").unwrap().len(), enabled);
    assert_eq!(inv.groups["ou_france"].children, vec!["ou_france_lyon"]);
    // Every 100th is disabled.
    assert!(inv.host("ly0099.corp.example").is_none());

    // Smaller pages: the loop follows the cookie through all of them.
    let (inv, rep) = load_ok(
        &slapd_source(fx::SLAPD_READER, "page_size: 300\n"),
        &s.pki.ca,
    )
    .await;
    assert_eq!(inv.hosts.len(), enabled);
    assert_eq!(rep.pages, enabled.div_ceil(300));
    assert_eq!(rep.largest_page, 300);
}

#[tokio::test]
async fn refused_page_size_and_entry_cap_are_errors_not_partial_inventories() {
    env_init();
    let s = fx::slapd();
    // `strict` may page by 250 at most: slapd refuses a 1,000-entry page outright.
    let e = load_err(
        &slapd_source(fx::SLAPD_STRICT, "page_size: 1000\n"),
        &s.pki.ca,
    )
    .await;
    let msg = e.to_string();
    assert!(msg.contains("LDAP result 11"), "{msg}");
    assert!(msg.contains("illegal pagedResults page size"), "{msg}");
    assert_no_password(&msg);

    // max_hosts bounds what is read.
    let e = load_err(
        &slapd_source(fx::SLAPD_READER, "max_hosts: 1500\n"),
        &s.pki.ca,
    )
    .await;
    assert!(e.message.contains("more than 1500 computer entries"), "{e}");
}

/// The directory as the operator uses it: `pushscan inventory --graph` shows the OU groups,
/// a static inventory merged with it warns on a conflicting variable, and `pushscan plan
/// --by ou` cuts waves per OU (a canary each) from the AD hosts, with no connection to them.
#[tokio::test]
async fn the_cli_reads_the_directory_merges_a_static_file_and_plans_by_ou() {
    env_init();
    let dc = fx::dc();
    let extra = "ous: [\"OU=Lab,DC=corp,DC=example\", \"OU=Paris,DC=corp,DC=example\"]\n";
    let (dir, ad, _) = source(&ad_source(&dc.ldaps_url(), extra), &dc.pki.ca);
    let static_inv = dir.path().join("static.yml");
    std::fs::write(
        &static_inv,
        "all:\n  hosts:\n    lab-0000.corp.example:\n      os: Windows 11 Pro (patched)\n    \
         extra-pc.corp.example:\n      ansible_connection: winrm\n      ou: Extra\n",
    )
    .unwrap();
    let checker = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/checkers/emocheck-sim.sh"
    );
    let pin = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(std::fs::read(checker).unwrap()))
    };
    let pb = dir.path().join("pb.yml");
    std::fs::write(
        &pb,
        format!(
            "name: ad\nchecker:\n  path: {checker}\n  sha256: {pin}\n  platform: windows\n  \
             remote_name: emocheck.exe\nwork_dir: 'C:\\Windows\\Temp\\pushscan'\n\
             args: [/quiet, /json, /output, '{{{{ run_dir }}}}']\ntimeout: 60s\n\
             results:\n  glob: '*_emocheck.*'\n  parser: emocheck\n"
        ),
    )
    .unwrap();
    let exe = env!("CARGO_BIN_EXE_pushscan");

    let graph = std::process::Command::new(exe)
        .arg("inventory")
        .arg("-i")
        .arg(&ad)
        .args(["--graph", "ou_lab"])
        .output()
        .unwrap();
    let g = String::from_utf8_lossy(&graph.stdout);
    assert_eq!(
        graph.status.code(),
        Some(0),
        "{g}{}",
        String::from_utf8_lossy(&graph.stderr)
    );
    assert!(g.starts_with("@ou_lab:"), "{g}");
    assert!(g.contains("lab-0000.corp.example"), "{g}");
    assert!(!g.contains("paris-"), "{g}");

    let plan = std::process::Command::new(exe)
        .arg("plan")
        .arg("-i")
        .arg(&ad)
        .arg("-i")
        .arg(&static_inv)
        .arg("-p")
        .arg(&pb)
        .args(["--by", "ou", "--waves", "1,100%", "--format", "json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&plan.stderr).to_string();
    assert_eq!(plan.status.code(), Some(0), "{err}");
    assert_no_password(&err);
    assert!(
        err.contains("lab-0000.corp.example") && err.contains("os") && err.contains("static.yml"),
        "a conflicting variable is warned about, naming the sources: {err}"
    );
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let mut per_ou: std::collections::BTreeMap<String, Vec<(bool, usize)>> = Default::default();
    for w in plan["waves"].as_array().unwrap() {
        per_ou
            .entry(w["partition"].as_str().unwrap().to_string())
            .or_default()
            .push((
                w["canary"].as_bool().unwrap(),
                w["hosts"].as_array().unwrap().len(),
            ));
        for h in w["hosts"].as_array().unwrap() {
            assert_eq!(h["transport"], "winrm");
            assert_eq!(h["port"].as_u64(), Some(5985));
            assert_eq!(h["checker_path"], r"C:\Windows\Temp\pushscan\emocheck.exe");
        }
    }
    assert_eq!(plan["hosts"].as_u64(), Some(3 + 197 + 1));
    assert_eq!(per_ou["Lab"], vec![(true, 1), (false, 2)]);
    assert_eq!(per_ou["Paris"], vec![(true, 1), (false, 196)]);
    assert_eq!(per_ou["Extra"], vec![(true, 1)]);
}
