//! URLs in messages: never with a password.

/// `url` with the password (or a lone userinfo, which may be a token) replaced by
/// `***`: for errors, logs and `Debug`.
///
/// ```
/// assert_eq!(dlock_core::redact_url("redis://app:s3cret@db:6379/0"), "redis://app:***@db:6379/0");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    // A password written with a raw '/', '?' or '#' puts its '@' past them: then
    // hide everything up to that '@' rather than show the password.
    // Not when what follows the first ':' is a port (digits): then the '@' is in
    // the path (an etcd prefix, say).
    let password_with_separator = |at: usize| {
        rest[..at].split_once(':').is_some_and(|(_, after)| {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            !after[..end].bytes().all(|b| b.is_ascii_digit())
        })
    };
    let at = rest[..authority_end]
        .rfind('@')
        .or_else(|| rest.rfind('@').filter(|&at| password_with_separator(at)));
    match at {
        Some(at) => {
            let (userinfo, host_and_tail) = (&rest[..at], &rest[at + 1..]);
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            format!("{scheme}://{shown}@{host_and_tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact_url("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact_url("rediss://token@h"), "rediss://***@h");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("nonsense"), "nonsense");
        // Raw '/', '?' or '#' in a password: hidden, never shown.
        assert_eq!(redact_url("redis://u:pa/ss@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://u:pa?s#s@h"), "redis://u:***@h");
        // An '@' in a path without credentials before it stays as it is.
        assert_eq!(redact_url("etcd://h/pre@fix"), "etcd://h/pre@fix");
        assert_eq!(redact_url("etcd://h:2379/team@x/"), "etcd://h:2379/team@x/");
    }
}
