//! TEMPORARY stub (replaced by the real module on merge).
use secrecy::SecretString;
#[derive(Clone, Debug)]
pub struct Account {
    pub domain: Option<String>,
    pub user: String,
    full: String,
}
impl Account {
    pub fn parse(s: &str) -> Result<Account, String> {
        if let Some((d, u)) = s.split_once('\\') {
            return Ok(Account {
                domain: Some(d.into()),
                user: u.into(),
                full: u.into(),
            });
        }
        Ok(Account {
            domain: None,
            user: s.into(),
            full: s.into(),
        })
    }
    pub fn ntlm_user(&self) -> &str {
        &self.full
    }
    pub fn ntlm_domain(&self) -> &str {
        self.domain.as_deref().unwrap_or("")
    }
}
#[derive(Clone, Debug)]
pub struct Credential {
    pub account: Account,
    pub password: SecretString,
}
impl Credential {
    pub fn with_user(&self, account: Account) -> Credential {
        Credential {
            account,
            password: self.password.clone(),
        }
    }
}
#[derive(Debug)]
pub struct CredentialStore {}
impl CredentialStore {
    pub fn load(_p: &std::path::Path) -> anyhow::Result<CredentialStore> {
        anyhow::bail!("stub")
    }
}
pub fn resolve<'a>(
    _v: &serde_json::Value,
    name: &str,
    _s: Option<&'a CredentialStore>,
    f: Option<&'a Credential>,
) -> Result<&'a Credential, String> {
    f.ok_or_else(|| format!("{name}: no credential"))
}
