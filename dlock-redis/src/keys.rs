//! The key layout in Redis, versioned so a later layout can coexist.
//!
//! `[prefix]dlock:v1:lock:{<key>}` holds the owner id, `...:fence:{<key>}` the fence
//! counter, `...:queue:{<key>}` and `...:places:{<key>}` its line of waiters (by
//! arrival, and by when each place lapses), `...:reserved:{<key>}` the waiter a
//! release handed it to, `...:value:{<key>}` the value its holder published (elections),
//! `...:gate:{<resource>}` a fence gate's register, and releases are
//! published on `...:released:{<key>}`. The user key sits in one hash tag, so the
//! lock and its counter share a Cluster slot; it is escaped (`%` `{` `}`) so that no
//! key can end the tag early and no two keys collide.

use dlock_core::{InvalidInput, LockKey};

#[derive(Clone, Debug)]
pub(crate) struct KeyLayout {
    /// `[prefix]dlock:v1:`
    base: String,
}

impl KeyLayout {
    pub(crate) fn new(prefix: &str) -> Result<Self, InvalidInput> {
        if prefix.contains(['{', '}']) {
            return Err(InvalidInput::Option {
                name: "prefix",
                reason: "must not contain `{` or `}`: they would move the Cluster hash tag".into(),
            });
        }
        Ok(KeyLayout {
            base: format!("{prefix}dlock:v1:"),
        })
    }

    pub(crate) fn lock(&self, key: &LockKey) -> String {
        self.tagged("lock", key.as_str())
    }

    pub(crate) fn fence(&self, key: &LockKey) -> String {
        self.tagged("fence", key.as_str())
    }

    /// The waiters in line for `key`, scored by arrival (server µs).
    #[cfg(test)]
    pub(crate) fn queue(&self, key: &LockKey) -> String {
        self.tagged("queue", key.as_str())
    }

    /// When each waiter's place lapses unless refreshed (server ms).
    #[cfg(test)]
    pub(crate) fn places(&self, key: &LockKey) -> String {
        self.tagged("places", key.as_str())
    }

    /// The waiter a release handed `key` to, until it claims it or its place lapses.
    #[cfg(test)]
    pub(crate) fn reserved(&self, key: &LockKey) -> String {
        self.tagged("reserved", key.as_str())
    }

    pub(crate) fn value(&self, key: &LockKey) -> String {
        self.tagged("value", key.as_str())
    }

    pub(crate) fn gate(&self, resource: &str) -> String {
        self.tagged("gate", resource)
    }

    pub(crate) fn released_channel(&self, key: &LockKey) -> String {
        self.tagged("released", key.as_str())
    }

    /// A client's own channel, where releases name the waiter of this client they
    /// handed a key to.
    pub(crate) fn client_channel(&self, client: &str) -> String {
        self.tagged("client", client)
    }

    /// What a client's channel name starts with: the scripts append the client
    /// id and `}`.
    pub(crate) fn client_channel_prefix(&self) -> String {
        format!("{}client:{{", self.base)
    }

    /// The release channel of a key already escaped (see [`escape`]).
    pub(crate) fn released_channel_of_escaped(&self, escaped: &str) -> String {
        let mut out = String::with_capacity(self.base.len() + escaped.len() + 12);
        out.push_str(&self.base);
        out.push_str("released:{");
        out.push_str(escaped);
        out.push('}');
        out
    }

    /// The escaped key a release channel names, if it is one of ours.
    pub(crate) fn escaped_key_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.base.as_str())?
            .strip_prefix("released:{")?
            .strip_suffix('}')
    }

    /// The five keys the acquire and release scripts touch (lock, fence, queue,
    /// places, reserved), in one allocation: they are on every call's path.
    pub(crate) fn script_keys(&self, key: &LockKey) -> ScriptKeys {
        let mut text = String::with_capacity(5 * (self.base.len() + key.as_str().len() + 12));
        let mut ends = [0; 5];
        for (end, kind) in ends
            .iter_mut()
            .zip(["lock", "fence", "queue", "places", "reserved"])
        {
            self.tagged_into(kind, key.as_str(), &mut text);
            *end = text.len();
        }
        ScriptKeys { text, ends }
    }

    fn tagged(&self, kind: &str, key: &str) -> String {
        let mut out = String::with_capacity(self.base.len() + kind.len() + key.len() + 4);
        self.tagged_into(kind, key, &mut out);
        out
    }

    fn tagged_into(&self, kind: &str, key: &str, out: &mut String) {
        out.push_str(&self.base);
        out.push_str(kind);
        out.push_str(":{");
        escape_into(key, out);
        out.push('}');
    }
}

/// The keys of [`KeyLayout::script_keys`], back to back in one string.
pub(crate) struct ScriptKeys {
    text: String,
    ends: [usize; 5],
}

impl ScriptKeys {
    /// The keys in the scripts' order: lock, fence, queue, places, reserved.
    pub(crate) fn all(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends)
            .map(|(start, end)| &self.text[start..end])
    }
}

/// Escapes the characters that could end or fake a hash tag, and the escape itself.
pub(crate) fn escape_into(key: &str, out: &mut String) {
    for c in key.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
}

pub(crate) fn escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    escape_into(key, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> LockKey {
        LockKey::new(k).expect("valid")
    }

    #[test]
    fn keys_share_one_hash_tag_and_never_collide() {
        let layout = KeyLayout::new("app:").expect("valid");
        assert_eq!(layout.lock(&key("order:1")), "app:dlock:v1:lock:{order:1}");
        assert_eq!(
            layout.fence(&key("order:1")),
            "app:dlock:v1:fence:{order:1}"
        );
        assert_eq!(
            layout.lock(&key("a}b{c%")),
            "app:dlock:v1:lock:{a%7Db%7Bc%25}"
        );
        let distinct = ["a}", "a%7D", "a%", "a%25", "{a}", "a"];
        let mut seen: Vec<String> = distinct.iter().map(|k| layout.lock(&key(k))).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), distinct.len(), "{seen:?}");
        let channel = layout.released_channel(&key("x}y"));
        assert_eq!(layout.escaped_key_of_channel(&channel), Some("x%7Dy"));
        assert_eq!(layout.released_channel_of_escaped("x%7Dy"), channel);
        let k = key("o}1");
        let script_keys = layout.script_keys(&k);
        let keys: Vec<&str> = script_keys.all().collect();
        assert_eq!(
            keys,
            [
                layout.lock(&k),
                layout.fence(&k),
                layout.queue(&k),
                layout.places(&k),
                layout.reserved(&k)
            ]
        );
        assert_eq!(layout.escaped_key_of_channel("other:released:{x}"), None);
    }

    #[test]
    fn a_prefix_with_braces_is_refused() {
        assert!(KeyLayout::new("a{b}").is_err());
    }
}
