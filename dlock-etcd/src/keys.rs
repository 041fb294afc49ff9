//! The key layout in etcd, versioned under any prefix, one directory per kind so no
//! user key can reach internal data:
//!
//! - `[prefix]v2/lock/<escaped key>/<client><slot>`: one directory per lock key,
//!   holding its holder and its waiters, ordered by create revision;
//! - `[prefix]v2/fenced/<escaped resource>`: `put_if_held` writes;
//! - `[prefix]v2/gate/<escaped resource>/token` and `.../value`: the fence gate;
//! - `[prefix]v2/election/<escaped name>/...`: elections;
//! - `[prefix]v2/cancelled/<escaped lock entry>/<n>`: session mode's markers of
//!   first attempts that must not create their key any more.
//!
//! v1 (before 0.2) put lock directories straight under the prefix, beside `fenced/`
//! and `election/`, so the lock key `fenced` collided with fenced writes.

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

/// The layout version, the first path segment under the prefix.
const VERSION: &str = "v2/";

impl KeyLayout {
    pub(crate) fn new(prefix: &str) -> Self {
        KeyLayout {
            prefix: format!("{prefix}{VERSION}"),
        }
    }

    /// `[prefix]v2/lock/<escaped key>/`: every holder and waiter of `key`.
    pub(crate) fn dir(&self, key: &LockKey) -> String {
        format!("{}lock/{}/", self.prefix, escape(key.as_str()))
    }

    /// `[prefix]v2/lock/<escaped key>/<client><slot>`: one acquisition's place in line,
    /// named after its owner's slot (see `owners`).
    pub(crate) fn entry(&self, key: &LockKey, owner: &OwnerId) -> String {
        format!("{}{}", self.dir(key), crate::owners::key_name(owner))
    }

    /// Session mode's cancel marker of `entry`'s first attempt number `attempt`:
    /// outside every lock directory, so no line sees it.
    pub(crate) fn cancelled(&self, entry: &str, attempt: u64) -> String {
        format!("{}cancelled/{}/{attempt}", self.prefix, escape(entry))
    }

    /// The election `name`.
    pub(crate) fn election(&self, name: &str) -> String {
        format!("{}election/{}", self.prefix, escape(name))
    }

    /// Where `put_if_held` writes of `resource` live.
    pub(crate) fn fenced(&self, resource: &str) -> String {
        format!("{}fenced/{}", self.prefix, escape(resource))
    }

    /// The fence gate's register of `resource`: its highest token and its value.
    pub(crate) fn gate(&self, resource: &str) -> (String, String) {
        let dir = format!("{}gate/{}/", self.prefix, escape(resource));
        (format!("{dir}token"), format!("{dir}value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_never_nest_or_collide() {
        let layout = KeyLayout::new("dlock/");
        let dir = |k: &str| layout.dir(&LockKey::new(k).expect("valid"));
        assert_eq!(dir("a/b"), "dlock/v2/lock/a%2Fb/");
        assert_eq!(dir("a%2Fb"), "dlock/v2/lock/a%252Fb/");
        // "a" must not be a prefix directory of "a/b".
        assert!(!dir("a/b").starts_with(&dir("a")));
        let mut all: Vec<String> = ["a", "a/", "a/b", "a%", "a%2F", "/a"].map(dir).to_vec();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6);
    }

    /// No lock key's directory can hold internal data, whatever its name.
    #[test]
    fn lock_directories_never_reach_internal_data() {
        let layout = KeyLayout::new("app/");
        let internal = [
            layout.fenced("x"),
            layout.election("x"),
            layout.gate("x").0,
            layout.gate("x").1,
        ];
        for name in [
            "fenced",
            "election",
            "gate",
            "lock",
            "v2",
            "..",
            "fenced/x",
            "v2/fenced",
        ] {
            let dir = layout.dir(&LockKey::new(name).expect("valid"));
            assert!(dir.starts_with("app/v2/lock/"), "{dir}");
            for data in &internal {
                assert!(!data.starts_with(&dir), "lock `{name}` reaches {data}");
            }
        }
    }
}
