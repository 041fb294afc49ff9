//! The key layout in etcd: `[prefix]<escaped key>/<client><slot>`, one directory per lock
//! key holding its holder and its waiters, ordered by create revision.

use dlock_core::{LockKey, OwnerId};

/// Escapes `/` (the separator) and `%` (the escape), so that every key works and no
/// key's directory is a prefix of another's.
pub(crate) fn escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Clone, Debug)]
pub(crate) struct KeyLayout {
    prefix: String,
}

impl KeyLayout {
    pub(crate) fn new(prefix: &str) -> Self {
        KeyLayout {
            prefix: prefix.to_owned(),
        }
    }

    /// `[prefix]<escaped key>/`: every holder and waiter of `key`.
    pub(crate) fn dir(&self, key: &LockKey) -> String {
        format!("{}{}/", self.prefix, escape(key.as_str()))
    }

    /// `[prefix]<escaped key>/<client><slot>`: one acquisition's place in line,
    /// named after its owner's slot (see `owners`).
    pub(crate) fn entry(&self, key: &LockKey, owner: &OwnerId) -> String {
        format!("{}{}", self.dir(key), crate::owners::key_name(owner))
    }

    /// The election `name`: beside the lock directories.
    pub(crate) fn election(&self, name: &str) -> String {
        format!("{}election/{}", self.prefix, escape(name))
    }

    /// Where fenced writes of `resource` live: beside the lock directories.
    pub(crate) fn fenced(&self, resource: &str) -> String {
        format!("{}fenced/{}", self.prefix, escape(resource))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_never_nest_or_collide() {
        let layout = KeyLayout::new("dlock/v1/");
        let dir = |k: &str| layout.dir(&LockKey::new(k).expect("valid"));
        assert_eq!(dir("a/b"), "dlock/v1/a%2Fb/");
        assert_eq!(dir("a%2Fb"), "dlock/v1/a%252Fb/");
        // "a" must not be a prefix directory of "a/b".
        assert!(!dir("a/b").starts_with(&dir("a")));
        let mut all: Vec<String> = ["a", "a/", "a/b", "a%", "a%2F", "/a"].map(dir).to_vec();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6);
    }
}
