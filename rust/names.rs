//! Node names, with `erl`'s rules for short and long names.

use erl_dist::node::NodeName;

/// Why a node name was refused.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error("give exactly one of --sname and --name")]
    NoneOrBoth,
    #[error("{0:?} is not a valid node name: {1}")]
    Invalid(String, String),
    #[error("short name {0:?} has a host part with dots; use --name for fully qualified hosts")]
    DottedShort(String),
    #[error("cannot find this machine's host name: {0}")]
    Hostname(std::io::Error),
}

/// The node's full name from `--sname` or `--name`. A missing host part is
/// filled as `erl` does: the short host name for `-sname`, the full one for `-name`.
pub fn node_name(sname: Option<&str>, name: Option<&str>) -> Result<NodeName, NameError> {
    let (given, short) = match (sname, name) {
        (Some(s), None) => (s, true),
        (None, Some(n)) => (n, false),
        _ => return Err(NameError::NoneOrBoth),
    };
    let full = match given.split_once('@') {
        Some((_, host)) => {
            if short && host.contains('.') {
                return Err(NameError::DottedShort(given.to_owned()));
            }
            given.to_owned()
        }
        None => {
            let host = hostname().map_err(NameError::Hostname)?;
            let host = if short { host.split('.').next().unwrap_or(&host).to_owned() } else { host };
            format!("{given}@{host}")
        }
    };
    let alive = full.split('@').next().unwrap_or_default();
    if alive.is_empty() || !alive.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(NameError::Invalid(full, "the name part may hold only letters, digits, _ and -".into()));
    }
    full.parse().map_err(|e: erl_dist::node::NodeNameError| NameError::Invalid(full.clone(), e.to_string()))
}

/// This machine's host name.
pub fn hostname() -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_erl_naming_rules() {
        assert_eq!(node_name(Some("a@h"), None).unwrap().to_string(), "a@h");
        assert!(node_name(Some("a@h.example.com"), None).is_err());
        assert!(node_name(None, Some("a@h.example.com")).is_ok());
        assert!(node_name(Some("a"), Some("b")).is_err());
        assert!(node_name(Some("bad name@h"), None).is_err());
        let short = node_name(Some("a"), None).unwrap();
        assert!(!short.host().contains('.'));
    }
}
